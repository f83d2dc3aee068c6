"""The app benchmarks/reload.py reloads: ``/`` answers VERSION, the line the benchmark
rewrites to trigger each reload; ``/slow`` answers it after 2 seconds. The ``X-Loaded``
header changes whenever this module is imported again, so a reload shows even when VERSION
stays the same (after a change elsewhere in the package)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any

VERSION = "v0"
SLOW_SECONDS = 2.0
LOADED = f"{os.getpid()}-{time.time_ns()}"


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/slow":
        time.sleep(SLOW_SECONDS)
    body = VERSION.encode()
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("X-Loaded", LOADED),
        ],
    )
    return [body]
