"""The app of the gevent-mode tests: ``/sleep?s=N`` waits N seconds (``time.sleep``, which
gevent's patching makes cooperative), ``/stats`` tells how many sleeps run now and at most,
anything else answers ``VERSION`` (edited by reload tests)."""

import json
import os
import sys
import time
from urllib.parse import parse_qs

VERSION = "v1"
state = {"running": 0, "most": 0}


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/sleep":
        seconds = float(parse_qs(environ["QUERY_STRING"]).get("s", ["1"])[0])
        state["running"] += 1
        state["most"] = max(state["most"], state["running"])
        try:
            time.sleep(seconds)
        finally:
            state["running"] -= 1
        body = b"slept"
    elif path == "/stats":
        patched = "gevent.monkey" in sys.modules and sys.modules["gevent.monkey"].is_module_patched(
            "socket"
        )
        body = json.dumps({**state, "pid": os.getpid(), "patched": patched}).encode()
    else:
        body = VERSION.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
