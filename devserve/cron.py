"""Periodic jobs declared by addons, and the threads that run them.

An addon declares a job on a module-level function::

    from devserve.cron import cron

    @cron(interval=60)  # seconds; name="..." to choose the name the log shows
    def purge_expired_sessions():
        ...

Jobs register when they are decorated (when the addon is imported); :func:`served_jobs`
keeps those of the addons being served. :class:`CronRunner` runs them on a few threads:

- A job's first run comes at start + a random jitter in [0, min(interval, 1 s)), so jobs
  (and processes) started together do not all fire at once. The next runs follow every
  ``interval`` from the previous *planned* time, so the rhythm does not drift; slots missed
  while the job ran long (or every thread was busy) are skipped, never run in a burst.
- A job never runs twice at once: a thread claims it, and while it runs it is not due.
- The threads sleep on a condition until the next due time or a stop: no polling.
- A job that raises logs ``cron job <name> failed`` with its traceback and runs again at its
  next time. A job past ``time_limit`` seconds logs its stack, once per run; it goes on (a
  thread cannot be killed), and :meth:`CronRunner.stop` abandons it after its timeout.

Threaded mode: :mod:`devserve.runtime` starts one runner with ``--max-cron-threads`` threads
once the server serves, and stops it (waiting the drain's grace period) on a stop or before a
reload's exec.

Prefork mode: the same runner runs unchanged in cron worker processes
(:mod:`devserve._engine.cron_workers`): the master deals the jobs into
``n = min(max_cron_threads, len(jobs))`` slots with :func:`partition`, and slot ``i``'s worker
runs ``CronRunner(partition(jobs, n)[i], threads=1, time_limit=time_limit(settings))``: each
job belongs to one slot, so it never runs in two processes at once, provided a slot's
replacement starts only once its previous holder has exited. Create and start the runner in
the process that runs the jobs, after the fork (never fork a process whose runner has
started); the job registry itself is filled at import, so a worker forked after the addons
were imported inherits it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from devserve.addons import NAMESPACE, addon_of

if TYPE_CHECKING:
    from devserve.config import Settings

__all__ = [
    "MAX_JITTER",
    "CronRunner",
    "Job",
    "Schedule",
    "cron",
    "partition",
    "served_jobs",
    "time_limit",
]

_logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

MAX_JITTER = 1.0  # seconds: a job's first run is delayed by up to min(interval, this)


@dataclasses.dataclass(frozen=True, eq=False)  # compared by identity: each is one job
class Job:
    """A function to call every ``interval`` seconds."""

    function: Callable[[], object]
    interval: float
    name: str

    @property
    def module(self) -> str:
        return self.function.__module__


# Jobs by the dotted path of their function; re-decorating a function replaces its job.
_jobs: dict[str, Job] = {}


def cron(interval: float, *, name: str | None = None) -> Callable[[F], F]:
    """Run the decorated module-level function every ``interval`` seconds (a positive
    number) while its addon is served. ``name`` is what the log calls the job (default:
    ``<addon>.<module>.<function>``)."""
    if callable(interval):  # a bare @cron
        raise TypeError(f"@cron needs an interval: @cron(interval=60) on {_where(interval)}")

    def decorate(function: F) -> F:
        where = _where(function)
        seconds = _check_interval(interval, where)
        _check_function(function, where)
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise TypeError(f"@cron name must be a non-empty string, not {name!r} ({where})")
        path = f"{function.__module__}.{function.__qualname__}"
        _jobs[path] = Job(function, seconds, name or path.removeprefix(NAMESPACE + "."))
        return function

    return decorate


def _where(function: Any) -> str:
    """``pkg.mod.func (path/to/mod.py, line 12)``: the function a decorator error is about."""
    what = f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', function)}"
    code = getattr(function, "__code__", None)
    return f"{what} ({code.co_filename}, line {code.co_firstlineno})" if code else what


def _check_interval(interval: object, where: str) -> float:
    if isinstance(interval, bool) or not isinstance(interval, numbers.Real):
        raise TypeError(
            f"@cron interval must be a number of seconds, not {type(interval).__name__} ({where})"
        )
    seconds = float(interval)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(
            f"@cron interval must be a positive number of seconds, not {interval!r} ({where})"
        )
    return seconds


def _check_function(function: object, where: str) -> None:
    import inspect

    if not inspect.isfunction(function):
        raise TypeError(f"@cron goes on a function, not a {type(function).__name__} ({where})")
    if "." in function.__qualname__:  # a method, or a function defined in a function
        raise TypeError(f"@cron goes on a module-level function ({where})")
    try:
        inspect.signature(function).bind()
    except TypeError:
        raise TypeError(f"a @cron function is called with no arguments ({where})") from None


def served_jobs(addons: Iterable[str]) -> list[Job]:
    """The jobs declared by the modules of these addons (names), in declaration order."""
    names = set(addons)
    return [job for job in _jobs.values() if addon_of(job.module, names)]


def partition(jobs: Sequence[Job], count: int) -> list[list[Job]]:
    """The jobs dealt round-robin into ``count`` groups (prefork: one per cron worker)."""
    return [list(jobs[index::count]) for index in range(count)]


def time_limit(settings: Settings) -> float:
    """``--limit-time-real-cron`` resolved as Odoo does: -1 means ``--limit-time-real``."""
    limit = settings.limit_time_real_cron
    return settings.limit_time_real if limit < 0 else limit


def _jitter(most: float) -> float:
    return random.random() * most


class Schedule:
    """When each job runs next, and which one is due. Pure logic on a clock given by the
    caller; not thread-safe (the runner holds its lock around it)."""

    def __init__(
        self, jobs: Iterable[Job], now: float, jitter: Callable[[float], float] = _jitter
    ) -> None:
        self._next = {job: now + jitter(min(job.interval, MAX_JITTER)) for job in jobs}
        self._running: set[Job] = set()

    def planned(self, job: Job) -> float:
        return self._next[job]

    def claim(self, now: float) -> Job | None:
        """The due job planned the earliest, marked running; None if none is due."""
        due = [job for job, at in self._next.items() if at <= now and job not in self._running]
        if not due:
            return None
        job = min(due, key=self._next.__getitem__)
        self._running.add(job)
        return job

    def release(self, job: Job, now: float) -> float:
        """The run claimed has ended at ``now``: the job's next time is the first slot of its
        rhythm after ``now`` (the slots it overran are skipped). Returns that time."""
        self._running.discard(job)
        planned = self._next[job]
        slots = math.floor(max(0.0, now - planned) / job.interval) + 1
        following = planned + slots * job.interval
        if following <= now:  # the float arithmetic landed on (or below) now
            following += job.interval
        self._next[job] = following
        return following

    def next_due(self) -> float | None:
        """The earliest planned time of a job not running; None if all are running."""
        return min((at for job, at in self._next.items() if job not in self._running), default=None)


@dataclasses.dataclass(eq=False)
class Run:
    """A job running on a thread."""

    job: Job
    thread: threading.Thread
    started: float  # time.monotonic()
    reported: bool = False  # its stack was logged for the time limit

    def age(self) -> float:
        return time.monotonic() - self.started


class CronThread(threading.Thread):
    """A cron thread; a daemon, so a job that never ends cannot hold the process."""

    kind = "cron"

    def __init__(self, work: Callable[[CronThread], None], name: str) -> None:
        super().__init__(target=work, args=(self,), name=name, daemon=True)
        self.current: Run | None = None

    def doing(self) -> str:
        """For stack dumps."""
        current = self.current
        if current is None:
            return "idle"
        return f"job {current.job.name}, running for {current.age():.1f}s"


class CronRunner:
    """Runs jobs on ``threads`` threads (0: none) until stopped; ``time_limit`` seconds (0:
    none) past which a run's stack is logged. Thread-safe; start once, stop once."""

    def __init__(self, jobs: Iterable[Job], threads: int = 2, time_limit: float = 0.0) -> None:
        self.jobs = list(jobs)
        self.threads = threads
        self.time_limit = time_limit
        self._lock = threading.Lock()
        self._due = threading.Condition(self._lock)  # a job may be due, or stop
        self._watched = threading.Condition(self._lock)  # a run started, or stop
        self._schedule = Schedule((), 0.0)  # the jobs' own from start()
        self._runs: dict[Job, Run] = {}
        self._threads: list[CronThread] = []
        self._stopping = False

    def start(self) -> None:
        """Start the threads (none without jobs) and say so in the log."""
        count = min(self.threads, len(self.jobs))
        with self._lock:  # the threads wait for it before they look at the schedule
            if self._threads or self._stopping or not self.jobs:
                return
            self._schedule = Schedule(self.jobs, time.monotonic())
            self._threads = [CronThread(self._work, f"devserve.cron.{n}") for n in range(count)]
            if count and self.time_limit > 0:
                self._threads.append(CronThread(self._watch, "devserve.cron.watchdog"))
            for thread in self._threads:
                thread.start()
        if not count:
            _logger.info("cron: %s not run (no cron thread)", _plural(len(self.jobs), "job"))
            return
        _logger.info("cron: %s on %s", _plural(len(self.jobs), "job"), _plural(count, "thread"))

    def stop(self, timeout: float) -> bool:
        """No job starts from now on; wait up to ``timeout`` seconds for the running ones.
        True when none is left running; those still running are logged and abandoned."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._stopping = True
            self._due.notify_all()
            self._watched.notify_all()
            threads = list(self._threads)
            running = [run.job.name for run in self._runs.values()]
        if running and timeout > 0:
            _logger.info(
                "cron: waiting up to %gs for %s: %s",
                timeout,
                _plural(len(running), "running job"),
                ", ".join(running),
            )
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            left = list(self._runs.values())
        for run in left:
            _logger.warning(
                "cron job %s still running after %.1fs: abandoned", run.job.name, run.age()
            )
        return not left

    # --- in the cron threads ---

    def _work(self, thread: CronThread) -> None:
        while (run := self._claim(thread)) is not None:
            try:
                run.job.function()
            except BaseException:  # even SystemExit: the thread must stay to run the others
                _logger.exception("cron job %s failed", run.job.name)
            with self._lock:
                thread.current = None
                del self._runs[run.job]
                self._schedule.release(run.job, time.monotonic())
                # Its next time may come before what an idle thread sleeps until.
                self._due.notify()

    def _claim(self, thread: CronThread) -> Run | None:
        """Sleep until a job is due and take it; None once stopping."""
        with self._lock:
            while not self._stopping:
                now = time.monotonic()
                job = self._schedule.claim(now)
                if job is not None:
                    run = thread.current = self._runs[job] = Run(job, thread, now)
                    self._watched.notify()
                    return run
                due = self._schedule.next_due()
                self._due.wait(None if due is None else due - now)
        return None

    def _watch(self, thread: CronThread) -> None:
        """The watchdog: logs the stack of each run that passes the time limit, once."""
        while (late := self._wait_for_late()) is not None:
            for run in late:
                self._report_late(run)

    def _wait_for_late(self) -> list[Run] | None:
        with self._lock:
            while not self._stopping:
                now = time.monotonic()
                pending = [run for run in self._runs.values() if not run.reported]
                late = [run for run in pending if now - run.started >= self.time_limit]
                if late:
                    for run in late:
                        run.reported = True
                    return late
                deadline = min((run.started + self.time_limit for run in pending), default=None)
                self._watched.wait(None if deadline is None else deadline - now)
        return None

    def _report_late(self, run: Run) -> None:
        from devserve import debug

        with self._lock:
            if self._runs.get(run.job) is not run:
                return  # it ended meanwhile
        _logger.warning(
            "cron job %s has run for %.1fs, past the cron time limit (%gs); it goes on:\n%s",
            run.job.name,
            run.age(),
            self.time_limit,
            "\n".join(debug.format_stacks([run.thread])),
        )


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
