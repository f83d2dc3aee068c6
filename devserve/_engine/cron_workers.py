"""Prefork's cron workers: the served addons' ``@cron`` jobs in processes beside the
workers, as a :class:`~devserve._engine.children.Companion` of the master.

The composition root deals the jobs into ``n = min(--max-cron-threads, jobs)`` slots and
gives one runner factory per slot (a :class:`devserve.cron.CronRunner` of that slot's jobs on
one thread): this module knows runners only by their contract (:class:`Runner`). A slot's
worker process runs its runner, so a job never runs in two processes at once, and a slot
is filled again only once its holder has been reaped (after a crash, or in the next image
of a reload, which stops these first). A worker that dies is replaced after a second, then,
if it keeps dying within seconds of its start, after 2, 4, 8... seconds
(:class:`~devserve._engine.children.Backoff`).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from devserve._engine.children import Backoff, Processes, describe_exit, orphaned

__all__ = ["CronWorkerBody", "CronWorkers", "Runner"]

_logger = logging.getLogger("devserve.prefork")

STARTED_AFTER = 5.0  # a worker alive this long has started: dying later is no start failure
STOP_GRACE = 5.0  # a stopped worker finishes its running job for this long, at most


class Runner(Protocol):
    """What runs a slot's jobs: started in the worker process, stopped within a grace."""

    def start(self) -> None: ...

    def stop(self, timeout: float) -> bool: ...


class CronWorkerBody:
    """One cron worker process: its slot's runner until TERM, or until the master is gone."""

    def __init__(self, make_runner: Callable[[], Runner], number: int, master: int) -> None:
        self.make_runner = make_runner
        self.number = number
        self.master = master
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> int:
        runner = self.make_runner()  # here, after the fork: never fork a started runner
        runner.start()
        while not self._stop.wait(1.0):
            if orphaned(self.master):
                _logger.warning("cron worker #%d: the master is gone; exiting", self.number)
                break
        # The master waits for us (bounded) before a reload: finish the running job if we can.
        runner.stop(STOP_GRACE)
        return 0


class CronWorkers:
    """The cron workers of a prefork master, one per slot."""

    description = ""
    kind = "cron"
    ends_before_exec = True  # the next image's workers must not overlap these

    def __init__(
        self,
        slots: Sequence[Callable[[], Runner]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.runners = list(slots)  # one runner factory per slot
        self.clock = clock
        self.master = os.getpid()
        self.slots: dict[int, int] = {}  # pid -> slot
        self._started: dict[int, float] = {}  # pid -> when
        self._retiring: set[int] = set()
        self._retired = False
        self.backoff = Backoff(free=0, clock=clock)

    @property
    def pids(self) -> list[int]:
        return list(self.slots)

    def maintain(self, processes: Processes) -> None:
        if self._retired or not self.backoff.allows():
            return
        held = set(self.slots.values())
        for slot, make_runner in enumerate(self.runners):
            if slot not in held:
                body = CronWorkerBody(make_runner, slot + 1, self.master)
                pid = processes.fork(body, f"cron worker #{slot + 1}")
                self.slots[pid] = slot
                self._started[pid] = self.clock()

    def reaped(self, pid: int, code: int, stopping: bool) -> bool:
        if pid not in self.slots:
            return False
        slot = self.slots.pop(pid)
        started = self._started.pop(pid)
        if pid in self._retiring or stopping or self._retired:
            self._retiring.discard(pid)
            return True
        if self.clock() - started >= STARTED_AFTER:
            self.backoff.started()
        delay = self.backoff.failed()
        how = describe_exit(code)
        _logger.warning(
            "cron worker #%d died (%s); starting another in %.0f s", slot + 1, how, delay
        )
        return True

    def retire(self) -> list[int]:
        self._retired = True
        self._retiring |= set(self.slots)
        return self.pids
