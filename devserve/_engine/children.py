"""The children toolkit: what a supervising process (the prefork master) needs to start,
watch and end the processes it runs, written once for every kind of child.

- :class:`Processes`, the operating system's side: fork a :class:`ChildBody` with the
  signals masked until the child has its own handlers (the child signal table,
  :func:`install_child_signals`), spawn a fresh interpreter on a passed socket, signal,
  reap. The master touches processes only through it, so a test can pass a fake.
- :class:`Companion`, the contract of a group of children the master keeps beside its
  workers (prefork's cron workers, the evented child): started when missing, told when one
  of theirs is reaped, signalled, retired. The master knows none of them by name.
- :class:`Backoff`, the one policy for children that die at start; :func:`orphaned`, the
  check a child makes that its master still lives; :func:`describe_exit` and
  :func:`set_title` for the log and ``ps``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Callable, Sequence
from typing import Protocol

from devserve.reloader import GAP_SIGNALS

__all__ = [
    "CHILD_SIGNALS",
    "Backoff",
    "ChildBody",
    "Companion",
    "Processes",
    "describe_exit",
    "install_child_signals",
    "orphaned",
    "set_title",
]

_logger = logging.getLogger("devserve.prefork")

MAX_BACKOFF = 30.0  # seconds between two starts, at most, for children that keep dying
# Blocked from the fork until the child's handlers are in: the master's, inherited, would
# swallow a TERM sent to the child meanwhile.
CHILD_SIGNALS = GAP_SIGNALS | {signal.SIGCHLD, signal.SIGXCPU}


def describe_exit(code: int) -> str:
    """A child's end as the log tells it, from ``os.waitstatus_to_exitcode()``."""
    return f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


def set_title(title: str) -> None:
    """``devserve: master`` in ps and top (setproctitle, when installed)."""
    with contextlib.suppress(ImportError):
        import setproctitle

        setproctitle.setproctitle(f"devserve: {title}")


def orphaned(master: int, adopter: int | None = None) -> bool:
    """Whether the master that started this child is gone (the child was re-parented), to
    anyone but ``adopter`` (the warm parent above a prefork master: the old master's
    workers become its children and serve on until the next master retires them)."""
    return os.getppid() not in (master, adopter)


class ChildBody(Protocol):
    """What a forked child runs: ``run()`` until done (its exit code), ``stop()`` on TERM
    (finish what is running, then return from ``run()``)."""

    def run(self) -> int: ...

    def stop(self) -> None: ...


def install_child_signals(body: ChildBody) -> None:
    """The child signal table: TERM stops the body; QUIT logs its stacks; CTRL-C on a
    terminal (INT to the whole group), HUP, TTIN, TTOU and USR1/USR2 are the master's
    business (a body that reports on USR1 installs its own handler). Then unblocked."""
    from devserve import debug

    signal.signal(signal.SIGTERM, lambda signum, frame: body.stop())
    signal.signal(signal.SIGQUIT, lambda signum, frame: debug.dump_stacks())
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(signum, signal.SIG_IGN)
    for signum in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, CHILD_SIGNALS)


class Processes:
    """The operating system's side of supervising: start, signal, reap. ``in_child`` runs
    first in every forked child: the supervisor closes its own descriptors there."""

    def __init__(self) -> None:
        self.in_child: Callable[[], None] = lambda: None

    def fork(self, body: ChildBody, title: str) -> int:
        """Fork a child that runs ``body`` under the child signal table and exits with its
        code (titled ``title [pid]``); its PID."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, CHILD_SIGNALS)
        pid = os.fork()
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            return pid
        code = 1
        try:
            self.in_child()
            set_title(f"{title} [{os.getpid()}]")
            install_child_signals(body)
            code = body.run()
        except BaseException:
            _logger.exception("%s failed", title)
        finally:
            os._exit(code)

    def spawn(self, argv: Sequence[str], env: dict[str, str], passed: tuple[int, int]) -> int:
        """Start a fresh interpreter (``posix_spawn``) with descriptor ``passed[0]`` on
        ``passed[1]``; its PID."""
        source, target = passed
        if source == target:  # dup2 onto itself would leave it close-on-exec
            os.set_inheritable(target, True)
        return os.posix_spawn(
            argv[0], list(argv), env, file_actions=[(os.POSIX_SPAWN_DUP2, source, target)]
        )

    def kill(self, pid: int, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    def reap(self, block: bool = False) -> tuple[int, int] | None:
        """A child that ended: (PID, exit code as ``waitstatus_to_exitcode`` gives it); None
        when none has (or, blocking, when no child is left)."""
        try:
            pid, status = os.waitpid(-1, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return None
        return (pid, os.waitstatus_to_exitcode(status)) if pid else None


class Backoff:
    """Children that die at start, in a row: the first ``free`` deaths restart at once,
    then each start waits twice as long as the one before (1 s, 2 s, 4 s... at most
    MAX_BACKOFF): broken code never becomes a fork loop, and a fix is picked up soon."""

    def __init__(self, free: int, clock: Callable[[], float]) -> None:
        self.free = free
        self.clock = clock
        self.failures = 0
        self.until = 0.0  # no start before this time

    def allows(self) -> bool:
        return self.clock() >= self.until

    def started(self) -> None:
        """A child started well: the count starts again."""
        self.failures = 0

    def failed(self) -> float:
        """A child died at start: how long the next start waits (0: at once)."""
        self.failures += 1
        over = self.failures - self.free
        delay = min(MAX_BACKOFF, 2.0 ** (over - 1)) if over > 0 else 0.0
        self.until = self.clock() + delay
        return delay


class Companion(Protocol):
    """A group of children a supervisor keeps beside its workers. ``description``: for the
    banner ("" for none); ``ends_before_exec``: a reload stops them (waiting for them)
    before the exec, else they are retired and finish on their own."""

    description: str
    kind: str  # what the status calls its children: "cron", "evented"
    ends_before_exec: bool

    @property
    def pids(self) -> list[int]:
        """Every child of the group still to be reaped, retiring ones included."""
        ...

    def maintain(self, processes: Processes) -> None:
        """Start what is missing (unless backing off)."""

    def reaped(self, pid: int, code: int, stopping: bool) -> bool:
        """Whether ``pid`` was one of the group's; ``stopping``: the supervisor is ending,
        so nothing is started again."""
        ...

    def retire(self) -> list[int]:
        """Start nothing more; the PIDs to TERM."""
        ...
