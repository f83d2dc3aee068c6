"""Pages for live reload: HTML in the shapes an app sends it (with a length, streamed with
``</body>`` cut between two chunks, without ``</body>``, behind a strict CSP), and what must
never be touched (JSON, gzip, 204, 304, a download). ``VERSION`` is rewritten by tests."""

import gzip

VERSION = "v0"

PAGE = (
    "<!doctype html><html><head><title>live</title>"
    '<link rel="stylesheet" href="/static/site.css"></head>'
    '<body><p id="version">{version}</p></body></html>'
)


def _html(start_response, body, status="200 OK", extra=()):
    start_response(
        status,
        [
            ("Content-Type", "text/html; charset=utf-8"),
            ("Content-Length", str(len(body))),
            *extra,
        ],
    )
    return [body]


def _static(path):
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    name = path.split("?")[0].removeprefix("/static/")
    full = os.path.join(here, "static", name)
    with open(full, "rb") as file:
        return file.read()


def app(environ, start_response):
    path = environ["PATH_INFO"]
    page = PAGE.format(version=VERSION).encode()
    if path == "/":
        return _html(start_response, page, extra=[("ETag", '"v"'), ("Last-Modified", "x")])
    if path == "/csp":
        policy = "default-src 'self'; script-src 'self'; style-src 'self'"
        return _html(start_response, page, extra=[("Content-Security-Policy", policy)])
    if path == "/streamed":
        start_response("200 OK", [("Content-Type", "text/html")])
        return iter([b"<html><body><p>streamed</p></bo", b"dy></html>"])
    if path == "/bodyless":
        return _html(start_response, b"<p>no body tag</p>")
    if path == "/missing":
        return _html(start_response, b"<html><body>not here</body></html>", "404 Not Found")
    if path == "/json":
        body = b'{"html": "</body>"}'
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/gzip":
        body = gzip.compress(page)
        return _html(start_response, body, extra=[("Content-Encoding", "gzip")])
    if path == "/download":
        return _html(start_response, page, extra=[("Content-Disposition", "attachment")])
    if path == "/not-modified":
        start_response("304 Not Modified", [("Content-Type", "text/html"), ("ETag", '"v"')])
        return []
    if path == "/empty":
        start_response("204 No Content", [("Content-Type", "text/html")])
        return []
    if path.startswith("/static/"):
        body = _static(path)
        kind = "text/css" if path.split("?")[0].endswith(".css") else "text/javascript"
        start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return [body]
    return _html(start_response, b"<html><body>none</body></html>", "404 Not Found")
