"""A WSGI app for the prefork and limit tests: which process answers, and routes that break
each limit.

/                      -> "ok"
/pid                   -> the PID of the process that served the request
/allocate?mib=N        -> keeps N MiB (touched, so resident) in a module-level list: "<pid>"
/busy?seconds=S        -> spins on the CPU for up to S seconds (20 by default): "<pid>"
/sleep?seconds=S       -> sleeps S seconds in sleep_here(): "slept S by <pid>"

With $LIMITSAPP_STARTED set, /busy and /sleep create that file once they run.
"""

import os
import time
from urllib.parse import parse_qs

KEPT = []  # what /allocate holds on to


def _started():
    if os.environ.get("LIMITSAPP_STARTED"):
        with open(os.environ["LIMITSAPP_STARTED"], "w") as marker:
            marker.write(str(os.getpid()))


def sleep_here(seconds):
    _started()
    time.sleep(seconds)


def spin(seconds):
    _started()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        pass


def app(environ, start_response):
    path = environ["PATH_INFO"]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    pid = os.getpid()
    if path == "/pid":
        body = str(pid)
    elif path == "/allocate":
        mebibytes = int(query.get("mib", ["200"])[0])
        KEPT.append(b"\1" * (mebibytes * 1024 * 1024))  # filled: resident, not just reserved
        body = str(pid)
    elif path == "/busy":
        spin(float(query.get("seconds", ["20"])[0]))
        body = str(pid)
    elif path == "/sleep":
        seconds = float(query.get("seconds", ["1"])[0])
        sleep_here(seconds)
        body = f"slept {seconds:g} by {pid}"
    else:
        body = "ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body.encode()]
