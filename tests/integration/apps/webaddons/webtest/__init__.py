"""Fixture addon of test_web.py: json and http routes, an RPC service, two WSGI handlers."""

import json

from devserve import register_wsgi_handler, rpc
from devserve.http import Controller, Response, request, route


class Api(Controller):
    @route("/webtest/add", type="json")
    def add(self, a, b=0):
        return a + b

    @route("/webtest/items/<int:item>", type="json")
    def item(self, item, quantity=1):
        # The URL's item wins over an "item" in the params.
        return {"item": item, "quantity": quantity}

    @route("/webtest/params", type="json")
    def params(self, **kwargs):
        # request.params is this call's, even inside a batch.
        return {"kwargs": kwargs, "request": request.params, "addon": request.addon}

    @route("/webtest/fail", type="json")
    def fail(self):
        raise ValueError("no such thing")

    @route("/webtest/inner-type-error", type="json")
    def inner_type_error(self, word):
        return len(word, 2)  # a TypeError raised inside: a server error, not invalid params

    @route("/webtest/nan", type="json")
    def nan(self):
        return float("nan")

    @route("/webtest/search", methods=["GET", "POST"])
    def search(self, q, page="1"):
        return Response(f"q={q} page={page}", mimetype="text/plain")

    @route("/webtest/anything", methods=["GET", "POST"])
    def anything(self, **kwargs):
        return Response(json.dumps(kwargs, sort_keys=True), mimetype="application/json")

    @route("/webtest/page/<name>")
    def page(self, name, size="m"):
        return Response(f"name={name} size={size}", mimetype="text/plain")

    @route("/webtest/whoami")
    def whoami(self):
        http = request.httprequest
        facts = {"host": http.host, "scheme": http.scheme, "remote_addr": http.remote_addr}
        return Response(json.dumps(facts), mimetype="application/json")

    @route("/chain/shadowed")
    def shadowed(self):
        return "the route"


SECRET_CALLS = []


@rpc.service("inventory")
class Inventory:
    def count(self, item, factor=1):
        return len(item) * factor

    def echo(self, *args):
        return list(args)

    def nothing(self):
        return None

    def fail(self):
        raise LookupError("out of stock")

    def addon(self):
        return request.addon

    def unmarshallable(self):
        return {1, 2}

    def secret_calls(self):
        return len(SECRET_CALLS)

    def _secret(self):
        SECRET_CALLS.append(1)
        return "leaked"


def _text(start_response, text):
    body = text.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def first_handler(environ, start_response):
    if environ["PATH_INFO"] in ("/chain/first", "/chain/both", "/chain/shadowed"):
        return _text(start_response, "first handler")
    return None


def second_handler(environ, start_response):
    if environ["PATH_INFO"] in ("/chain/second", "/chain/both"):
        return _text(start_response, "second handler")
    return None


register_wsgi_handler(first_handler)
register_wsgi_handler(second_handler)
