"""Prefork's evented child (``--gevent-port``, Odoo's long-polling port): the master's side.

:class:`EventedChild` is a :class:`~devserve._engine.children.Companion` of the master: it
runs ``devserve gevent`` as a fresh interpreter on a socket the master binds once and keeps
(across respawns and the master's own reloads), so a respawn or a reload never refuses a
client. It is respawned when it dies (backing off when it keeps dying at start), retired on
a reload (it finishes its requests while the next image starts a child on the new code),
and stopped with the master. The child's side is :mod:`devserve._engine.gevent`: it finds
the socket and its master's PID in the variables :func:`child_environment` sets.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable

from devserve import config, values
from devserve._engine.children import Backoff, Processes, describe_exit
from devserve.errors import ConfigError
from devserve.reloader import HandedChildren

__all__ = [
    "CHILD_FD",
    "PARENT_ENV",
    "SOCKET_ENV",
    "EventedChild",
    "child_environment",
    "from_settings",
]

_logger = logging.getLogger("devserve.evented")

PARENT_ENV = "DEVSERVE_GEVENT_PARENT"  # in the evented child: the prefork master's PID
SOCKET_ENV = "DEVSERVE_GEVENT_FD"  # in the evented child: the listen socket the master passes
CHILD_FD = 3
STARTED_AFTER = 5.0  # a child alive this long has started; dying later is not a boot failure


INSTALL_HINT = "pip install 'devserve[gevent]'"


def available() -> bool:
    """Whether gevent is installed (the gevent mode and the evented child need it)."""
    import importlib.util

    return importlib.util.find_spec("gevent") is not None


def from_settings(
    settings: config.Settings, handed: HandedChildren | None, app_object: bool = False
) -> EventedChild | None:
    """With ``--workers`` and ``--gevent-port``: the evented child, on a socket bound once
    (or kept from the previous image); refused for an app object handed to
    ``devserve.run()`` (``app_object``: the child must load the target itself), or without
    gevent. Without: the previous image's child, if any, is stopped."""
    from devserve.servers import bind_socket

    if settings.gevent_port is not None and settings.workers:
        if app_object:
            raise ConfigError(
                "--gevent-port needs a target the evented child can load itself: an addons "
                "folder or module:attribute, not an app object handed to devserve.run()"
            )
        if not available():
            raise ConfigError(f"--gevent-port needs gevent, which is not installed: {INSTALL_HINT}")
    sock, previous = (handed.sock, list(handed.pids)) if handed else (None, [])
    if settings.gevent_port is None or not settings.workers:
        if sock is not None:  # --gevent-port (or --workers) was dropped: the child goes
            for pid in previous:
                os.kill(pid, signal.SIGTERM)
            sock.close()
        return None
    if sock is None:
        sock = bind_socket(settings.http_interface, settings.gevent_port)
    port = sock.getsockname()[1]
    return EventedChild(sock, child_environment(settings, port), previous, port)


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
        "dev": tuple(m for m in settings.dev if m not in values.POST_MORTEM),
    }
    for field, option in config.options():
        if not option.in_file:
            continue
        value = overrides.get(field.name, getattr(settings, field.name))
        name = config.env_var(field.name)
        if value is None:
            env.pop(name, None)
        else:
            env[name] = values.format_value(value)
    env[PARENT_ENV] = str(os.getpid())
    env[SOCKET_ENV] = str(CHILD_FD)
    return env


class EventedChild:
    """The evented child of a prefork master: started, respawned when it dies (backing off
    when it dies at start), restarted on reload, stopped with the master."""

    kind = "evented"
    ends_before_exec = False  # retired: it finishes its requests while the next image starts

    def __init__(
        self,
        sock: socket.socket,
        env: dict[str, str],
        previous: Iterable[int],
        port: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sock = sock  # kept by the master: across respawns and its own reloads
        self.port = port
        self.description = f"evented child on port {port}"
        self.env = env
        self.clock = clock
        self.pid: int | None = None
        self.retiring = set(previous)  # the previous image's children, finishing requests
        self._started = 0.0
        self.backoff = Backoff(free=1, clock=clock)  # once is an accident (or a kill)

    @property
    def pids(self) -> list[int]:
        return [*([self.pid] if self.pid else []), *self.retiring]

    def maintain(self, processes: Processes) -> None:
        if self.pid is None and self.backoff.allows():
            argv = [sys.executable, "-m", "devserve", "gevent"]
            self.pid = processes.spawn(argv, self.env, (self.sock.fileno(), CHILD_FD))
            self._started = self.clock()
            _logger.info("evented child started (pid %d)", self.pid)

    def reaped(self, pid: int, code: int, stopping: bool) -> bool:
        """Whether ``pid`` was ours; a child that died on its own is started again."""
        if pid in self.retiring:
            self.retiring.discard(pid)
            return True
        if pid != self.pid:
            return False
        self.pid = None
        if stopping:
            return True
        how = describe_exit(code)
        if self.clock() - self._started >= STARTED_AFTER:
            self.backoff.started()
            delay = 0.0
        else:
            delay = self.backoff.failed()
        if not delay:
            _logger.warning("evented child died (%s); starting another", how)
        else:  # it keeps dying at start: broken code, a port problem... back off
            _logger.error(
                "evented child died while starting (%s), %d in a row: next attempt in %.0f s",
                how,
                self.backoff.failures,
                delay,
            )
        return True

    def retire(self) -> list[int]:
        """Not respawned from now on; it finishes its requests on its own once TERMed."""
        if self.pid is not None:
            self.retiring.add(self.pid)
            self.pid = None
        return self.pids

    def handover(self) -> HandedChildren:
        """For the next image: the socket, and the children still finishing on it."""
        return HandedChildren(self.sock, tuple(self.pids))
