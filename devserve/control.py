"""Talking to a running devserve: ``devserve status``, ``devserve reload``, ``devserve stop``.

A server is found on this machine by its port (``-p``) or its pidfile (``--pidfile``: the
PID, and the port that process listens on, as the system tells). ``status`` asks ``GET
/__devserve__/status`` (see :mod:`devserve.status`); ``reload`` and ``stop`` send HUP and
TERM to the PID the server reports (or the pidfile names) and wait: for the status to name
a new image, or for the process to end. Every wait has a deadline; nothing that answers is
one line saying why (exit 1).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import signal
import time
from typing import Any

from devserve import log, values
from devserve.config import ENV_PREFIX
from devserve.errors import DevserveError, UsageError

__all__ = ["NotRunningError", "Where", "locate", "reload", "show_status", "stop"]

STATUS_PATH = "/__devserve__/status"
DEFAULT_PORT = 8069
ASK_TIMEOUT = 3.0  # seconds a status request may take
POLL = 0.05  # seconds between two looks while waiting (each one a status to make)


class NotRunningError(DevserveError):
    """No devserve answers where the user pointed (exit 1)."""


@dataclasses.dataclass(frozen=True)
class Where:
    """Where to find the server: a port on an interface of this machine, or a pidfile."""

    port: int
    interface: str = "127.0.0.1"
    pidfile: str | None = None

    def describe(self) -> str:
        return f"the pidfile {self.pidfile}" if self.pidfile else f"{self.host}:{self.port}"

    @property
    def host(self) -> str:
        # A server on every interface answers on loopback too.
        return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(
            self.interface, self.interface
        )


# --- finding the server ---


def locate(port: int | None, pidfile: str | None, interface: str) -> Where:
    """Where to look: the port or pidfile given, else the ``DEVSERVE_PIDFILE`` or
    ``DEVSERVE_HTTP_PORT`` the server would have been started with, else port 8069."""
    if port is None and pidfile is None:
        pidfile = os.environ.get(f"{ENV_PREFIX}PIDFILE") or None
    if port is None and pidfile is None:
        text = os.environ.get(f"{ENV_PREFIX}HTTP_PORT", str(DEFAULT_PORT))
        try:
            port = values.parse_port(text)
        except ValueError as error:
            raise UsageError(f"{ENV_PREFIX}HTTP_PORT={text!r}: {error}; give -p PORT") from None
    return Where(port or DEFAULT_PORT, interface, pidfile)


def pid_of(where: Where) -> int:
    """The PID the pidfile names, if that process runs."""
    assert where.pidfile is not None
    try:
        with open(where.pidfile, encoding="ascii") as file:
            text = file.read().strip()
    except FileNotFoundError:
        raise NotRunningError(
            f"no pidfile {where.pidfile}: devserve is not running with --pidfile {where.pidfile}"
        ) from None
    except (OSError, ValueError) as error:
        raise NotRunningError(f"cannot read a PID from {where.pidfile}: {error}") from None
    pid = _pid(text, where.pidfile)
    if not _alive(pid):
        raise NotRunningError(
            f"the pidfile {where.pidfile} names process {pid}, which is not running"
        )
    return pid


def _pid(value: object, source: str) -> int:
    """A PID devserve could have: a whole number above 1 (0, -1 and init are never one)."""
    try:
        pid = int(str(value))
    except ValueError:
        pid = 0
    if pid <= 1:
        raise NotRunningError(f"{source} gives no PID devserve could have: {value!r}")
    return pid


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _listening(pid: int) -> list[tuple[str, int]]:
    """The TCP addresses the process listens on (a warm parent holds devserve's)."""
    import psutil

    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return []
    found = [(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN]
    return [(Where(port, ip).host, port) for ip, port in found]


def ask(host: str, port: int) -> dict[str, Any] | None:
    """The status a server at host:port answers; None when it answers something else (no
    status served there: the app's 404). Raises OSError when nothing answers, and
    NotRunningError for a status that failed (a 500 saying why)."""
    connection = http.client.HTTPConnection(host, port, timeout=ASK_TIMEOUT)
    try:
        connection.request("GET", STATUS_PATH, headers={"Accept": "application/json"})
        response = connection.getresponse()
        body = response.read()
    except http.client.HTTPException as error:
        raise OSError(str(error)) from error
    finally:
        connection.close()
    if "json" not in (response.getheader("Content-Type") or ""):
        return None
    try:
        found = json.loads(body)
    except ValueError:
        return None
    if response.status == 500 and isinstance(found, dict) and "error" in found:
        raise NotRunningError(
            f"devserve at {host}:{port} could not make its status: {found['error']}"
        )
    ok = response.status == 200 and isinstance(found, dict) and "image" in found
    return found if ok else None


def status_of(where: Where) -> dict[str, Any]:
    """The server's status; NotRunningError saying why there is none. Through a pidfile:
    the status, among those of the ports the process listens on, that names that process
    (not one of its children's: prefork's evented child answers on its own port)."""
    addresses = [(where.host, where.port)]
    pid = None
    if where.pidfile is not None:
        pid = pid_of(where)
        addresses = _listening(pid)
        if not addresses:
            raise NotRunningError(f"process {pid} ({where.describe()}) listens on no TCP port")
    refused: OSError | None = None
    other = None
    for host, port in addresses:
        try:
            found = ask(host, port)
        except OSError as error:
            refused = error
            continue
        if found is not None and (pid is None or str(found.get("pid")) == str(pid)):
            return found
        other = other or f"{host}:{port}"
    if other is not None:
        raise NotRunningError(
            f"{other} answers, but not with devserve's status: start devserve with --status "
            "(or any --dev)"
        )
    raise NotRunningError(
        f"nothing answers at {where.describe()} ({_reason(refused)}): is devserve running? "
        "Give its port with -p or its pidfile with --pidfile"
    )


def _reason(error: OSError | None) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return error.strerror or str(error) if error is not None else "no answer"


def server_pid(where: Where, found: dict[str, Any]) -> int:
    """The PID to signal: the one the status names, once it is checked that this process
    listens where the status was asked (a server saying it is another process, or a
    foreign one answering JSON, gets no signal)."""
    pid = _pid(found.get("pid"), f"the status at {where.describe()}")
    if where.pidfile is None and where.port not in {port for _, port in _listening(pid)}:
        raise NotRunningError(
            f"the status at {where.describe()} names process {pid}, which does not listen "
            f"there: not signalling it"
        )
    return pid


# --- the commands ---


def show_status(where: Where, as_json: bool) -> None:
    found = status_of(where)
    if as_json:
        print(json.dumps(found, indent=2))
        return
    try:
        tables = _tables(found)
    except (AttributeError, KeyError, TypeError, ValueError):  # another version's shape
        print(json.dumps(found, indent=2))
        return
    log.print_tables(tables)


def reload(where: Where, timeout: float) -> str:
    """HUP, then wait until the status records a new reload, with new code serving (or an
    error: the new code failed to load); what to print."""
    before = status_of(where)
    pid = server_pid(where, before)
    started = time.monotonic()
    os.kill(pid, signal.SIGHUP)
    deadline = started + timeout
    while time.monotonic() < deadline:
        time.sleep(POLL)
        now = None
        with contextlib.suppress(OSError, NotRunningError):  # between two images
            now = status_of(where)
        if now is not None and _reloads(now) != _reloads(before):
            error = now.get("error")
            if isinstance(error, dict):
                raise NotRunningError(f"process {pid} reloaded, but {_failed(error)}")
            if now.get("image") != before.get("image"):
                took = (time.monotonic() - started) * 1000
                return f"reloaded in {took:.0f} ms: process {pid} serves image {now['image']}"
        if not _alive(pid):
            raise NotRunningError(f"process {pid} ended instead of reloading: see its log")
    raise NotRunningError(
        f"process {pid} got HUP, but serves no new code after {timeout:g}s: see its log"
    )


def _failed(error: dict[str, Any]) -> str:
    """``its new code does not serve: SyntaxError: ... (shop/views.py, line 3)``."""
    where = f" ({error.get('file')}, line {error.get('line')})" if error.get("file") else ""
    return f"its new code does not serve: {error.get('message')}{where}"


def _reloads(found: dict[str, Any]) -> tuple[int, object]:
    """What tells one status's reloads from another's: how many, and the last one."""
    reloads = found.get("reloads")
    if not isinstance(reloads, list):
        return (0, None)
    return (len(reloads), reloads[-1] if reloads else None)


def stop(where: Where, timeout: float) -> str:
    """TERM, then wait for the process to end; what to print."""
    if where.pidfile is not None:
        pid = pid_of(where)
        _check_devserve(pid, where)
    else:
        pid = server_pid(where, status_of(where))
    started = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    while time.monotonic() < started + timeout:
        if not _alive(pid):
            return f"stopped in {(time.monotonic() - started) * 1000:.0f} ms: process {pid}"
        time.sleep(POLL)
    raise NotRunningError(
        f"process {pid} got TERM, but still runs after {timeout:g}s (finishing requests?): "
        f"'kill -TERM {pid}' again stops it at once"
    )


def _check_devserve(pid: int, where: Where) -> None:
    """A pidfile may outlive its server, and its PID be another process's by now: signal
    only a process whose status names it, or, without a status, whose command line is
    devserve's."""
    with contextlib.suppress(NotRunningError):
        status_of(where)
        return
    import psutil

    try:
        command = " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        command = ""
    if "devserve" not in command:
        raise NotRunningError(
            f"the pidfile {where.pidfile} names process {pid}, which is not devserve "
            f"({command or 'unknown'}): a stale pidfile? Not signalling it"
        )


# --- the tables ---


def _tables(found: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The status as tables: the server, its reloads, its requests, workers and caches."""
    watching = found.get("watching") or {}
    server = [
        ["pid", str(found.get("pid"))],
        ["mode", str(found.get("mode"))],
        ["serving", str(found.get("target"))],
        ["image", str(found.get("image"))],
        ["started", f"{found.get('started_at')} (up {_age(found.get('uptime_s'))})"],
        [
            "watching",
            f"{len(watching.get('roots', []))} root(s), {watching.get('folders')} folder(s) "
            f"with {watching.get('backend')}"
            + (f", {len(watching['polled'])} polled" if watching.get("polled") else "")
            if watching
            else "-",
        ],
    ]
    tables = [(f"devserve {found.get('version')}", ["", ""], server)]
    reloads = [
        [
            str(item.get("at", ""))[11:19],
            str(item.get("kind")),
            str(item.get("cause")),
            " + ".join(
                f"{name} {ms}" for name, ms in item.get("ms", {}).items() if name != "total"
            ),
            f"{item.get('ms', {}).get('total', '-')} ms",
        ]
        for item in found.get("reloads", [])
    ]
    if reloads:
        tables.append(("reloads", ["at (UTC)", "kind", "cause", "ms", "total"], reloads))
    requests = [
        [r["method"], r["path"], r["client"], _age(r["age_s"])] for r in found.get("in_flight", [])
    ]
    tables.append(("requests in flight", ["method", "path", "client", "age"], requests))
    if not requests:
        tables[-1] = ("requests in flight: none", [], [])
    workers = [
        [
            str(w.get("pid")),
            str(w.get("number", "")),
            str(w.get("kind")),
            "" if w.get("requests") is None else str(w["requests"]),
            "" if w.get("rss_mib") is None else f"{w['rss_mib']:.1f}",
            _age(w.get("age_s")),
        ]
        for w in found.get("workers", [])
    ]
    if workers:
        columns = ["pid", "number", "kind", "requests", "RSS MiB", "age"]
        tables.append(("workers", columns, workers))
    caches = [
        [
            c["name"],
            str(c["entries"]),
            str(c["hits"]),
            str(c["misses"]),
            str(c["errors"]),
            f"{c['compute_ms']:.1f} ms",
        ]
        for c in found.get("caches", [])
    ]
    if caches:
        columns = ["cache", "entries", "hits", "misses", "errors", "compute"]
        tables.append(("caches", columns, caches))
    return tables


def _age(seconds: Any) -> str:
    if not isinstance(seconds, (int, float)):
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"
