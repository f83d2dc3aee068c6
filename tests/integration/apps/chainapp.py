"""A plain WSGI app whose module registers a WSGI handler, as an addon would.

/handled -> "handler" (the registered handler answers first)
/whoami  -> JSON of the host, scheme and client address the app sees (for --proxy-mode)
/...     -> "the app"
"""

import json

from devserve import register_wsgi_handler


def _text(start_response, body, content_type="text/plain"):
    data = body.encode()
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(data)))])
    return [data]


def handler(environ, start_response):
    if environ["PATH_INFO"] == "/handled":
        return _text(start_response, "handler")
    return None


register_wsgi_handler(handler)


def app(environ, start_response):
    if environ["PATH_INFO"] == "/whoami":
        facts = {
            "host": environ.get("HTTP_HOST"),
            "scheme": environ["wsgi.url_scheme"],
            "remote_addr": environ["REMOTE_ADDR"],
        }
        return _text(start_response, json.dumps(facts), "application/json")
    return _text(start_response, "the app")
