"""A Werkzeug app that parses a JSON body, as JSON-RPC endpoints and APIs do: its request
object and the environ refer to each other (a cycle), holding the body and what it parses.

POST /  -> the length of the "x" string of the JSON body
"""

from werkzeug.wrappers import Request, Response


@Request.application
def app(request):
    data = request.get_json(force=True)
    return Response(str(len(data["x"])), mimetype="text/plain")
