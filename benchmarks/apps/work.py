"""The app benchmarks/prefork.py serves: ``/`` is hello.py's hello world; ``/work`` answers
the same after burning WORK_SECONDS of CPU time in a busy loop (the CPU time of the serving
thread, so a busy machine makes it slower, not lighter)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from hello import app as hello

WORK_SECONDS = 0.005


def burn(seconds: float) -> None:
    """Busy loop until this thread has used `seconds` of CPU time."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    if environ.get("PATH_INFO") == "/work":
        burn(WORK_SECONDS)
    return hello(environ, start_response)
