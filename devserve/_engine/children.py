"""The children toolkit: what a supervising process (the prefork master) needs of the
processes it starts: their title in ps, how one ended, and prefork's evented child (Odoo's
long-polling port), started with ``posix_spawn`` on a socket the master keeps."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterable

from devserve import config

__all__ = [
    "CHILD_FD",
    "PARENT_ENV",
    "SOCKET_ENV",
    "EventedChild",
    "child_environment",
    "describe_exit",
    "set_title",
]

_logger = logging.getLogger("devserve.evented")

PARENT_ENV = "DEVSERVE_GEVENT_PARENT"  # in the evented child: the prefork master's PID
SOCKET_ENV = "DEVSERVE_GEVENT_FD"  # in the evented child: the listen socket the master passes
CHILD_FD = 3


def describe_exit(code: int) -> str:
    """A child's end as the log tells it, from ``os.waitstatus_to_exitcode()``."""
    return f"killed by signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


def set_title(title: str) -> None:
    """``devserve: master`` in ps and top (setproctitle, when installed)."""
    with contextlib.suppress(ImportError):
        import setproctitle

        setproctitle.setproctitle(f"devserve: {title}")


CHILD_BACKOFF_MAX = 30.0  # seconds between two attempts when the child keeps dying at start
STARTED_AFTER = 5.0  # a child alive this long has started; dying later is not a boot failure


def child_environment(settings: config.Settings, port: int) -> dict[str, str]:
    """The master's settings for the child, as ``DEVSERVE_*`` variables (they override the
    config file; the child has no command-line options): one process, on the gevent port,
    no pidfile, no post-mortem debugger (no terminal). It does not watch: the master
    reloads and restarts it."""
    env = dict(os.environ)
    overrides = {
        "workers": 0,
        "http_port": port,
        "gevent_port": None,
        "pidfile": None,
        # "reload" stays: the child serves a load error's page and gets the framework
        # integration; it never watches (it knows it is a child).
        "dev": tuple(m for m in settings.dev if m not in config.POST_MORTEM),
    }
    for field, option in config.options():
        if not option.in_file:
            continue
        value = overrides.get(field.name, getattr(settings, field.name))
        name = config.env_var(field.name)
        if value is None:
            env.pop(name, None)
        else:
            env[name] = config.format_value(value)
    env[PARENT_ENV] = str(os.getpid())
    env[SOCKET_ENV] = str(CHILD_FD)
    return env


class EventedChild:
    """The evented child of a prefork master: started, respawned when it dies (backing off
    when it dies at start), restarted on reload, stopped with the master."""

    def __init__(
        self, sock: socket.socket, env: dict[str, str], previous: Iterable[int], port: int
    ) -> None:
        self.sock = sock  # kept by the master: across respawns and its own reloads
        self.port = port
        self.env = env
        self.pid: int | None = None
        self.retiring = set(previous)  # the previous image's children, finishing requests
        self._started = 0.0
        self._failures = 0
        self._spawn_after = 0.0

    @property
    def pids(self) -> list[int]:
        return [*([self.pid] if self.pid else []), *self.retiring]

    def maintain(self, now: float) -> None:
        if self.pid is None and now >= self._spawn_after:
            self._spawn(now)

    def _spawn(self, now: float) -> None:
        argv = [sys.executable, "-m", "devserve", "gevent"]
        if self.sock.fileno() == CHILD_FD:  # dup2 onto itself would leave it close-on-exec
            os.set_inheritable(CHILD_FD, True)
        self.pid = os.posix_spawn(
            sys.executable,
            argv,
            self.env,
            file_actions=[(os.POSIX_SPAWN_DUP2, self.sock.fileno(), CHILD_FD)],
        )
        self._started = now
        _logger.info("evented child started (pid %d)", self.pid)

    def reaped(self, pid: int, code: int) -> bool:
        """Whether ``pid`` was ours; a child that died on its own is started again."""
        if pid in self.retiring:
            self.retiring.discard(pid)
            return True
        if pid != self.pid:
            return False
        self.pid = None
        how = describe_exit(code)
        now = time.monotonic()
        self._failures = self._failures + 1 if now - self._started < STARTED_AFTER else 0
        if self._failures < 2:  # once is an accident (or a kill): at once
            _logger.warning("evented child died (%s); starting another", how)
        else:  # it keeps dying at start: broken code, a port problem... back off
            delay = min(CHILD_BACKOFF_MAX, 2.0 ** (self._failures - 2))
            self._spawn_after = now + delay
            _logger.error(
                "evented child died while starting (%s), %d in a row: next attempt in %.0f s",
                how,
                self._failures,
                delay,
            )
        return True

    def signal(self, signum: int) -> None:
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def retire(self) -> None:
        """TERM it (it finishes its requests on its own); not respawned."""
        if self.pid is not None:
            self.retiring.add(self.pid)
            self.pid = None
        self.signal(signal.SIGTERM)

    def handover(self) -> tuple[socket.socket, list[int]]:
        return self.sock, self.pids
