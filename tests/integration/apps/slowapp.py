"""A plain WSGI app for integration tests: quick, slow and concurrency-counting routes.

/                 -> "ok"
/slow?seconds=S   -> sleeps S seconds, then "slept S"
/stats            -> "max_concurrent=N" (the most requests seen running at once)
/hold?mib=N       -> allocates N MiB and keeps them until the process ends, then "held N"
/exit             -> calls sys.exit(3), as an app should not
"""

import os
import sys
import threading
import time
from urllib.parse import parse_qs

_lock = threading.Lock()
_held = []
_running = 0
_max_running = 0


def app(environ, start_response):
    global _running, _max_running
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/stats":
        body = f"max_concurrent={_max_running}"
    elif path == "/exit":
        sys.exit(3)
    elif path == "/hold":
        mib = int(query.get("mib", ["1"])[0])
        _held.append(b"x" * (mib << 20))  # written, so resident
        body = f"held {mib}"
    elif path == "/slow":
        seconds = float(query.get("seconds", ["1"])[0])
        with _lock:
            _running += 1
            _max_running = max(_max_running, _running)
        if os.environ.get("SLOWAPP_STARTED"):
            with open(os.environ["SLOWAPP_STARTED"], "w") as marker:
                marker.write("started")
        try:
            time.sleep(seconds)
        finally:
            with _lock:
                _running -= 1
        body = f"slept {seconds}"
    else:
        body = "ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body.encode()]


def create_app(greeting="factory ok"):
    def factory_app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [greeting.encode()]

    return factory_app


def broken_app(environ, start_response):
    """/ raises: for the debugger tests."""
    local_answer = 6 * 7  # noqa: F841 (inspected from the debugger console)
    raise RuntimeError("boom from broken_app")
