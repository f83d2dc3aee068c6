"""Debugging tools wired to signals: stack dumps (QUIT) and cache reports (USR1/USR2).

Both run outside the signal handler: the handler only posts the signal to the control loop,
which calls these. The cache report runs in a background thread (estimating sizes can take
a while); a second signal while one runs stops it.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
from collections.abc import Iterable

from devserve import cache, log

__all__ = ["CacheReporter", "dump_stacks"]

_logger = logging.getLogger(__name__)


def _describe(thread: threading.Thread) -> str:
    kind = getattr(thread, "kind", None)
    if kind is None:
        kind = "main" if thread is threading.main_thread() else "thread"
    header = f"{thread.name} ({kind}, ident {thread.ident})"
    request = getattr(thread, "request", None)
    if request is not None:
        header += (
            f": {request.method} {request.path} from {request.client}, "
            f"running for {request.age:.1f}s"
        )
    elif kind == "request":
        header += ": idle"
    return header


def dump_stacks() -> None:
    """Log every thread's stack, request threads with what they serve and for how long."""
    frames = sys._current_frames()
    threads = threading.enumerate()
    lines = [f"stacks of process {os.getpid()} ({len(threads)} threads):"]
    for thread in threads:
        lines.append(f"# {_describe(thread)}")
        frame = frames.get(thread.ident or -1)
        if frame is not None:
            lines.extend(line.rstrip("\n") for line in traceback.format_stack(frame))
    _logger.info("%s", "\n".join(lines))


class CacheReporter:
    """``kill -USR1``: a table of cache statistics; ``kill -USR2``: with memory sizes."""

    def __init__(self, roots: Iterable[str] = ()) -> None:
        self.roots = list(roots)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def request(self, sizes: bool) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._stop.set()
            _logger.info("stopping the cache report under way")
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._report,
            args=(sizes, self._stop),
            name="devserve.cache-report",
            daemon=True,
        )
        self._thread.start()

    def _report(self, sizes: bool, stop: threading.Event) -> None:
        try:
            self._write_report(sizes, stop)
        except Exception:  # a report must never take anything down
            _logger.exception("the cache report failed")

    def _write_report(self, sizes: bool, stop: threading.Event) -> None:
        started = time.monotonic()
        stats = cache.all_caches(self.roots)
        columns = ["cache", "entries", "hits", "misses", "errors", "hit ratio", "compute"]
        if sizes:
            columns.insert(2, "memory")
        rows = []
        for item in stats:
            row = [
                item.name,
                str(item.entries),
                str(item.hits),
                str(item.misses),
                str(item.errors),
                f"{item.hit_ratio:.0%}",
                f"{item.compute_time * 1000:.1f} ms",
            ]
            if sizes:
                if stop.is_set():
                    _logger.info("cache report stopped")
                    return
                row.insert(
                    2, _human(cache.estimate_size(item.values, stop)) if item.values else "-"
                )
            rows.append(row)
        title = (
            f"caches of process {os.getpid()} ({len(stats)}, in {time.monotonic() - started:.2f}s)"
        )
        log.print_table(title, columns, rows)


def _human(size: int) -> str:
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024  # type: ignore[assignment]
    return f"{size:.1f} GiB"
