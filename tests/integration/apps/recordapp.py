"""A plain WSGI app that records the requests it sees, so a test can check that a rejected
request never reached it.

/seen   -> one line per request seen so far, /seen itself excepted: "METHOD PATH LENGTH",
           LENGTH being the body length, or "-" while (or if) reading the body did not end;
           headers X-Entered (requests that reached the app) and X-Completed (those whose
           body was read to its end)
/echo   -> the request body
/...    -> "ok" (every other path); the body is read to its end first
"""

import threading

_lock = threading.Lock()
_seen = []  # [method, path, body length or None], in arrival order


def app(environ, start_response):
    method = environ["REQUEST_METHOD"]
    path = environ["PATH_INFO"]
    if path == "/seen":
        return _report(start_response)
    entry = [method, path, None]
    with _lock:  # recorded before the body is read: reaching the app is what counts
        _seen.append(entry)
    data = environ["wsgi.input"].read()  # a malformed body raises out of the app here
    with _lock:
        entry[2] = len(data)
    body = data if path == "/echo" else b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _report(start_response):
    with _lock:
        entries = [list(entry) for entry in _seen]
    lines = [f"{m} {p} {'-' if n is None else n}\n" for m, p, n in entries]
    body = "".join(lines).encode("latin-1", "replace")
    completed = sum(n is not None for _, _, n in entries)
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain; charset=latin-1"),
            ("Content-Length", str(len(body))),
            ("X-Entered", str(len(entries))),
            ("X-Completed", str(completed)),
        ],
    )
    return [body]
