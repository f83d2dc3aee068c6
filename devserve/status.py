"""What ``GET /__devserve__/status`` answers: one JSON object saying what runs and what it
is doing, made by the control loop on request (:mod:`devserve._engine.devroutes` writes it;
the composition root hands it :meth:`StatusReport.snapshot`).

Everything here is read, never waited for: the requests in flight are what the request
threads (greenlets, prefork's scoreboard) say they serve, the caches' figures are read
without their locks, the watcher's without its set-up lock. It never runs the app's code.
The keys are documented in the README ("Looking inside a running server").
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from devserve import app, cache, log, project
from devserve._version import __version__

if TYPE_CHECKING:
    from devserve._engine.devroutes import DevRoutes
    from devserve.config import Settings
    from devserve.servers import Server
    from devserve.watching import ReloadWatch

__all__ = ["HISTORY", "PATH", "StatusReport"]

HISTORY = 20  # reloads the status remembers
PATH = "/__devserve__/status"  # devserve's own route (answered by _engine/devroutes.py)


@dataclasses.dataclass
class StatusReport:
    """The status of one serving process (a warm parent's serving child, an exec'd image,
    a prefork master). ``pid``: the process the user started and signals."""

    pid: int
    mode: str
    target: str
    image: str
    history: list[dict[str, Any]]  # the last reloads, oldest first
    roots: Callable[[], Iterable[str]]  # where the caches are looked for
    watch: ReloadWatch | None = None
    server: Server | None = None
    routes: DevRoutes | None = None  # the standing error; prefork's held greetings
    previous_image: str = ""  # the code that serves while a prefork master's does not yet

    @classmethod
    def starting(
        cls,
        settings: Settings,
        given: Any,
        image: str,
        history: list[dict[str, Any]],
        watch: ReloadWatch,
        warm_child: bool,
    ) -> StatusReport:
        """The report of an image starting (its server and mode come once it is made)."""
        return cls(
            pid=os.getppid() if warm_child else os.getpid(),
            mode="",
            target=app.describe_target(settings, given),
            image=image,
            history=history[-HISTORY:],
            roots=lambda: project.roots(settings, given),
            watch=watch,
        )

    def print_banner(self, settings: Settings, url: str, served: Any) -> None:
        """The start-up banner: what the status says first."""
        rows = [
            ("mode", self.mode),
            ("serving", self.target),
            ("dev", ",".join(settings.dev) or "-"),
            ("pid", str(self.pid)),  # a warm child's parent: the PID the user signals
        ]
        if "werkzeug" in settings.dev:
            from devserve import debug

            rows.append(("debugger PIN", debug.debugger_pin(served)))
        if settings.serves_status:
            rows.append(("status", f"{url}{PATH} (devserve status)"))
        log.print_banner(f"devserve serving on {url}", rows)

    def snapshot(self) -> dict[str, Any]:
        started = _started(self.pid)
        watcher = self.watch.watcher if self.watch is not None else None
        server = self.server
        return {
            "pid": self.pid,
            "version": __version__,
            "mode": self.mode,
            "target": self.target,
            "started_at": _iso(started) if started else None,
            "uptime_s": round(time.time() - started, 1) if started else None,
            "image": self.serving_image(),
            "error": self.routes.error if self.routes is not None else None,
            "reloads": self.history[-HISTORY:],
            "watching": watcher.status() if watcher is not None else None,
            "in_flight": [r.describe() for r in server.in_flight()] if server else [],
            "workers": server.children_status() if server is not None else [],
            "caches": [_figures(item) for item in cache.all_caches(self.roots(), values=False)],
        }

    def serving_image(self) -> str:
        """The id of the code serving: a prefork master's once its workers took over from
        the previous code's (its greetings held until then), the previous code's before."""
        if self.routes is not None and self.routes.holding and self.previous_image:
            return self.previous_image
        return self.image


def _started(pid: int) -> float | None:
    """When the process started (a re-exec keeps its PID and its start)."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return None


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()


def _figures(item: cache.CacheStats) -> dict[str, Any]:
    return {
        "name": item.name,
        "kind": item.kind,
        "entries": item.entries,
        "hits": item.hits,
        "misses": item.misses,
        "errors": item.errors,
        "compute_ms": round(item.compute_time * 1000, 1),
    }
