"""A plain WSGI app that records the requests it sees, so a test can check that a rejected
request never reached it.

/seen   -> one line per request seen so far, /seen itself excepted: "METHOD PATH LENGTH",
           LENGTH being the body length, or "-" while (or if) reading the body did not end;
           headers X-Entered (requests that reached the app) and X-Completed (those whose
           body was read to its end)
/echo   -> the request body
/...    -> "ok" (every other path); the body is read to its end first

With ``RECORDAPP_LOG`` set, the records go to that file (appended lines, so every process
of a prefork server records into the same one); else they are kept in memory.
"""

import itertools
import os
import threading

_lock = threading.Lock()
_seen = []  # [method, path, body length or None], in arrival order
_numbers = itertools.count()
_LOG = os.environ.get("RECORDAPP_LOG")


def app(environ, start_response):
    method = environ["REQUEST_METHOD"]
    path = environ["PATH_INFO"]
    if path == "/seen":
        return _report(start_response)
    entry = _record(method, path)  # before the body is read: reaching the app is what counts
    data = environ["wsgi.input"].read()  # a malformed body raises out of the app here
    _complete(entry, len(data))
    body = data if path == "/echo" else b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _record(method, path):
    key = f"{os.getpid()}-{next(_numbers)}"
    if _LOG:
        _append(f"enter {key} {method} {path.encode('unicode_escape').decode()}\n")
        return key
    entry = [method, path, None]
    with _lock:
        _seen.append(entry)
    return entry


def _complete(entry, length):
    if _LOG:
        _append(f"done {entry} {length}\n")
        return
    with _lock:
        entry[2] = length


def _append(line):
    # One write of a short line to a file opened for appending: whole, whatever the process.
    descriptor = os.open(_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(descriptor, line.encode())
    finally:
        os.close(descriptor)


def _entries():
    if not _LOG:
        with _lock:
            return [list(entry) for entry in _seen]
    entries, by_key = [], {}
    try:
        with open(_LOG, encoding="utf-8") as file:
            lines = file.read().splitlines()
    except FileNotFoundError:
        lines = []
    for line in lines:
        kind, key, rest = line.split(" ", 2)
        if kind == "enter":
            method, path = rest.split(" ", 1)
            by_key[key] = [method, path, None]
            entries.append(by_key[key])
        else:
            by_key[key][2] = int(rest)
    return entries


def _report(start_response):
    entries = _entries()
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
