"""Routes of the example addon. Edit a string here while running with --dev reload."""

import functools
from html import escape

from devserve import rpc
from devserve.cache import cached
from devserve.http import Controller, Response, request, route


@cached
def fibonacci(number: int) -> int:
    """Memoized with statistics: `kill -USR1 <pid>` shows its hits and misses."""
    return number if number < 2 else fibonacci(number - 1) + fibonacci(number - 2)


@functools.lru_cache(maxsize=64)
def shout(name: str) -> str:
    """A plain functools cache: devserve finds it and reports it too."""
    return name.upper()


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
    <li><a href="/hello/fibonacci/30">/hello/fibonacci/30</a>: a <code>@cached</code>
        function; then <code>kill -USR1 &lt;pid&gt;</code> logs its statistics</li>
    <li><a href="/hello/static/hello.css">/hello/static/hello.css</a>: a static file</li>
    <li><code>POST /hello/sum</code>: a JSON-RPC route, and the <code>hello</code> RPC
        service at <code>/xmlrpc/2/hello</code> and <code>/jsonrpc</code> (see the README)</li>
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

    @route("/hello/fibonacci/<int:number>", methods=["GET"])
    def fib(self, number: int) -> Response:
        return Response(f"fibonacci({number}) = {fibonacci(number)}\n", mimetype="text/plain")

    @route("/hello/shout/<name>", methods=["GET"])
    def loud(self, name: str) -> Response:
        return Response(shout(name) + "\n", mimetype="text/plain")

    @route("/hello/sum", type="json")
    def total(self, numbers: list[float]) -> float:
        """JSON-RPC 2.0: {"jsonrpc": "2.0", "id": 1, "method": "call",
        "params": {"numbers": [1, 2, 3]}} answers {"jsonrpc": "2.0", "id": 1, "result": 6}."""
        return sum(numbers)


@rpc.service("hello")
class HelloService:
    """Over XML-RPC: ServerProxy("http://127.0.0.1:8069/xmlrpc/2/hello").greet("you")."""

    def greet(self, name: str) -> str:
        return f"Hello, {name}!"
