"""The app benchmarks/gevent.py serves: ``/poll?seconds=S`` answers after waiting S seconds
(default 10) with ``time.sleep``, which gevent mode patches into a cooperative wait and which
holds a thread in threaded mode; ``/quick`` answers at once; ``/upload`` reads the request
body whole, then answers its length; ``/stats`` answers, as JSON, how
many requests are inside ``/poll`` now (``polling``), the most there were at once (``peak``)
and how many finished their wait (``done``)."""

from __future__ import annotations

import json
import threading  # patched by gevent mode: then a lock between greenlets
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

DEFAULT_SECONDS = 10.0

_lock = threading.Lock()
_counts = {"polling": 0, "peak": 0, "done": 0}


def _answer(start_response: Callable[..., Any], body: bytes, content_type: str) -> list[bytes]:
    start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def _poll(environ: dict[str, Any]) -> bytes:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    seconds = float(query.get("seconds", [DEFAULT_SECONDS])[0])
    with _lock:
        _counts["polling"] += 1
        _counts["peak"] = max(_counts["peak"], _counts["polling"])
    try:
        time.sleep(seconds)
    finally:
        with _lock:
            _counts["polling"] -= 1
            _counts["done"] += 1
    return b"polled\n"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO")
    if path == "/poll":
        return _answer(start_response, _poll(environ), "text/plain; charset=utf-8")
    if path == "/upload":
        length = len(environ["wsgi.input"].read())
        return _answer(start_response, b"%d\n" % length, "text/plain; charset=utf-8")
    if path == "/stats":
        with _lock:
            body = json.dumps(_counts).encode()
        return _answer(start_response, body, "application/json")
    return _answer(start_response, b"quick\n", "text/plain; charset=utf-8")
