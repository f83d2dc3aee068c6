"""Routes of the example addon. Edit a string here while running with --dev reload."""

from html import escape

from devserve.http import Controller, Response, request, route

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Hello from devserve</title>
  <link rel="stylesheet" href="/hello/static/hello.css">
</head>
<body>
  <h1>Hello from devserve</h1>
  <p>This page is served by the <code>hello</code> addon in <code>examples/addons</code>.</p>
  <ul>
    <li><a href="/hello/world">/hello/world</a>: a route with a name in it</li>
    <li><a href="/hello/repeat/3">/hello/repeat/3</a>: a route with an
        <code>&lt;int:count&gt;</code> converter</li>
    <li><a href="/hello/static/hello.css">/hello/static/hello.css</a>: a static file</li>
  </ul>
</body>
</html>
"""


class Hello(Controller):
    @route("/")
    def index(self) -> str:
        return PAGE

    @route("/hello/<name>", methods=["GET"])
    def greet(self, name: str) -> str:
        client = request.httprequest.remote_addr
        return f"<p>Hello, {escape(name)}! (asked by {escape(str(client))})</p>"

    @route("/hello/repeat/<int:count>", methods=["GET"])
    def repeat(self, count: int) -> Response:
        return Response("hello\n" * count, mimetype="text/plain")
