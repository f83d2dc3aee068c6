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

from devserve import log
from devserve.errors import DevserveError

__all__ = ["NotRunningError", "Where", "reload", "show_status", "stop"]

STATUS_PATH = "/__devserve__/status"
ASK_TIMEOUT = 3.0  # seconds a status request may take
POLL = 0.02  # seconds between two looks while waiting


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


def pid_of(where: Where) -> int:
    """The PID the pidfile names, if that process runs."""
    assert where.pidfile is not None
    try:
        with open(where.pidfile, encoding="ascii") as file:
            pid = int(file.read().strip())
    except FileNotFoundError:
        raise NotRunningError(
            f"no pidfile {where.pidfile}: devserve is not running with --pidfile {where.pidfile}"
        ) from None
    except (OSError, ValueError) as error:
        raise NotRunningError(f"cannot read a PID from {where.pidfile}: {error}") from None
    if not _alive(pid):
        raise NotRunningError(
            f"the pidfile {where.pidfile} names process {pid}, which is not running"
        )
    return pid


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _listening_ports(pid: int) -> list[int]:
    """The TCP ports the process listens on (a warm parent holds devserve's)."""
    import psutil

    try:
        connections = psutil.Process(pid).net_connections(kind="tcp")
    except psutil.Error:
        return []
    return [c.laddr.port for c in connections if c.status == psutil.CONN_LISTEN]


def ask(host: str, port: int) -> dict[str, Any] | None:
    """The status a server at host:port answers; None when it answers something else (no
    status served there: the app's 404). Raises OSError when nothing answers."""
    connection = http.client.HTTPConnection(host, port, timeout=ASK_TIMEOUT)
    try:
        connection.request("GET", STATUS_PATH, headers={"Accept": "application/json"})
        response = connection.getresponse()
        body = response.read()
    except http.client.HTTPException as error:
        raise OSError(str(error)) from error
    finally:
        connection.close()
    if response.status != 200 or "json" not in (response.getheader("Content-Type") or ""):
        return None
    try:
        found = json.loads(body)
    except ValueError:
        return None
    return found if isinstance(found, dict) and "image" in found else None


def status_of(where: Where) -> dict[str, Any]:
    """The server's status; NotRunningError saying why there is none."""
    ports = [where.port]
    if where.pidfile is not None:
        pid = pid_of(where)
        ports = _listening_ports(pid)
        if not ports:
            raise NotRunningError(f"process {pid} ({where.describe()}) listens on no TCP port")
    refused: OSError | None = None
    for port in ports:
        try:
            found = ask(where.host, port)
        except OSError as error:
            refused = error
            continue
        if found is not None:
            return found
        raise NotRunningError(
            f"{where.host}:{port} answers, but not with devserve's status: start devserve "
            "with --status (or any --dev)"
        )
    raise NotRunningError(
        f"nothing answers at {where.describe()} ({_reason(refused)}): is devserve running? "
        "Give its port with -p or its pidfile with --pidfile"
    )


def _reason(error: OSError | None) -> str:
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    return error.strerror or str(error) if error is not None else "no answer"


# --- the commands ---


def show_status(where: Where, as_json: bool) -> None:
    found = status_of(where)
    if as_json:
        print(json.dumps(found, indent=2))
        return
    log.print_tables(_tables(found))


def reload(where: Where, timeout: float) -> str:
    """HUP, then wait for the status to name a new image; what to print."""
    before = status_of(where)
    pid = int(before["pid"])
    started = time.monotonic()
    os.kill(pid, signal.SIGHUP)
    deadline = started + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, NotRunningError):
            now = status_of(where)
            if now["image"] != before["image"]:
                took = (time.monotonic() - started) * 1000
                return f"reloaded in {took:.0f} ms: process {pid} serves image {now['image']}"
        if not _alive(pid):
            raise NotRunningError(f"process {pid} ended instead of reloading: see its log")
        time.sleep(POLL)
    raise NotRunningError(
        f"process {pid} got HUP, but serves no new image after {timeout:g}s: see its log"
    )


def stop(where: Where, timeout: float) -> str:
    """TERM, then wait for the process to end; what to print."""
    pid = pid_of(where) if where.pidfile is not None else int(status_of(where)["pid"])
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
