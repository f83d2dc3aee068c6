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
from typing import TYPE_CHECKING, Any

from devserve import cache, log

if TYPE_CHECKING:
    from devserve.config import Settings

__all__ = [
    "CacheReporter",
    "PostMortem",
    "check_debugger_safety",
    "check_post_mortem",
    "check_socket_safety",
    "debugger",
    "debugger_pin",
    "dump_stacks",
    "failed_pins",
    "format_stacks",
    "is_loopback",
]

_logger = logging.getLogger(__name__)


def _describe(thread: threading.Thread) -> str:
    kind = getattr(thread, "kind", None)
    if kind is None:
        kind = "main" if thread is threading.main_thread() else "thread"
    header = f"{thread.name} ({kind}, ident {thread.ident})"
    request = getattr(thread, "request", None)
    doing = getattr(thread, "doing", None)  # a thread that says what it does (cron's)
    if request is not None:
        header += (
            f": {request.method} {request.path} from {request.client}, "
            f"running for {request.age:.1f}s"
        )
    elif kind == "request":
        header += ": idle"
    elif callable(doing):
        header += f": {doing()}"
    return header


def format_stacks(threads: Iterable[threading.Thread]) -> list[str]:
    """Lines for the threads' stacks, each under a header that says what the thread does."""
    frames = sys._current_frames()
    lines = []
    for thread in threads:
        lines.append(f"# {_describe(thread)}")
        frame = frames.get(thread.ident or -1)
        if frame is not None:
            lines.extend(line.rstrip("\n") for line in traceback.format_stack(frame))
    return lines


def dump_stacks(only: Iterable[threading.Thread] | None = None) -> None:
    """Log every thread's stack (or ``only`` those), request threads with what they serve
    and for how long."""
    threads = threading.enumerate() if only is None else list(only)
    header = f"stacks of process {os.getpid()} ({len(threads)} threads):"
    _logger.info("%s", "\n".join([header, *format_stacks(threads)]))


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
            if sizes:  # estimate_size() returns at once when asked to stop
                row.insert(
                    2, _human(cache.estimate_size(item.values, stop)) if item.values else "-"
                )
            rows.append(row)
        title = (
            f"caches of process {os.getpid()} ({len(stats)}, in {time.monotonic() - started:.2f}s)"
        )
        if stop.is_set():  # a stopped report never prints, whenever the stop came
            _logger.info("cache report stopped")
            return
        log.print_table(title, columns, rows)


def _human(size: int) -> str:
    """``512 B``, ``1.5 KiB``, ``3.2 MiB``..."""
    if size < 1024:
        return f"{size} B"
    amount = float(size)
    for unit in ("KiB", "MiB", "GiB"):
        amount /= 1024
        if amount < 1024 or unit == "GiB":
            return f"{amount:.1f} {unit}"
    raise AssertionError("unreachable")


# --- --dev werkzeug: the interactive debugger ---

RELOADED_PAGE = (
    "The server was reloaded since this page was shown: the frames of this traceback are "
    "gone. Reload this page."
)


def is_loopback(interface: str) -> bool:
    """Whether only this machine can reach ``interface`` (a name must resolve to loopback
    addresses only)."""
    import ipaddress
    import socket

    try:
        return ipaddress.ip_address(interface.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = socket.getaddrinfo(interface, None)
    except OSError:
        return False
    return all(ipaddress.ip_address(item[4][0]).is_loopback for item in found)


def check_debugger_safety(interface: str, allow_remote: bool) -> None:
    from devserve.errors import ConfigError

    if not allow_remote and not is_loopback(interface):
        raise ConfigError(
            f"--dev werkzeug on --http-interface {interface} would let anyone who reaches "
            "this machine run code through the debugger console; listen on 127.0.0.1, or "
            "add --debugger-allow-remote if that is what you want"
        )


def check_socket_safety(sock: Any, allow_remote: bool) -> None:
    """The same refusal for the socket actually served: one adopted from systemd socket
    activation (or handed over) may listen on every interface whatever
    ``--http-interface`` says."""
    from devserve.errors import ConfigError

    address = sock.getsockname()
    if allow_remote or not isinstance(address, tuple) or is_loopback(address[0]):
        return  # a Unix socket is this machine's
    raise ConfigError(
        f"--dev werkzeug on a socket listening on {address[0]} (passed to devserve, not "
        "bound by it) would let anyone who reaches this machine run code through the "
        "debugger console; pass a socket on 127.0.0.1, or add --debugger-allow-remote if "
        "that is what you want"
    )


# Frames kept for their consoles (about the last 20 tracebacks of a web framework's depth):
# older ones are let go, and their consoles end.
KEPT_FRAMES = 1000


def debugger(
    app: Any, interface: str, pin: str | None, trusted: Iterable[str], failures: int = 0
) -> Any:
    """The app behind Werkzeug's interactive debugger (a console on every traceback frame).
    ``pin``: a fixed PIN, ``"off"``, or None for Werkzeug's machine-derived one.
    ``failures``: the wrong PINs entered in the images before (a reload buys no guesses)."""
    from werkzeug.debug import DebuggedApplication

    class Debugger(DebuggedApplication):
        pruning = threading.Lock()
        ipv6_hosts: set[str]  # the trusted hosts that are IPv6 literals, as "[::1]"

        def __call__(self, environ: Any, start_response: Any) -> Any:
            if _addressed_to_another_image(self, environ):
                body = RELOADED_PAGE.encode()
                start_response(
                    "410 Gone",
                    [
                        ("Content-Type", "text/plain; charset=utf-8"),
                        ("Content-Length", str(len(body))),
                    ],
                )
                return [body]
            return super().__call__(environ, start_response)

        def debug_application(self, environ: Any, start_response: Any) -> Any:
            try:
                yield from super().debug_application(environ, start_response)
            finally:  # also when the server stops iterating (a client gone)
                if len(self.frames) > KEPT_FRAMES:
                    self.forget_old_frames()

        def forget_old_frames(self) -> None:
            """The oldest frames go first (the dict keeps them in order), the console's
            own (key 0) stays; with a lock: tracebacks may come from many threads."""
            with self.pruning:
                keys = [key for key in self.frames if key != 0]
                for key in keys[: max(0, len(self.frames) - KEPT_FRAMES)]:
                    self.frames.pop(key, None)
                    self.frame_contexts.pop(key, None)

        def check_host_trust(self, environ: Any) -> bool:
            # Werkzeug cuts "[::1]" at its first colon: IPv6 literals are matched here.
            host = environ.get("HTTP_HOST") or ""
            if host.startswith("["):
                return host[: host.find("]") + 1].lower() in self.ipv6_hosts
            return bool(super().check_host_trust(environ))

    wrapped = Debugger(app, evalex=True, pin_security=pin != "off", pin_logging=False)
    if pin:
        # Werkzeug computes its (PIN, cookie name) pair on first use, overwriting a PIN set
        # before: have it computed now, then set ours.
        wrapped.pin_cookie_name  # noqa: B018 (computes the pair)
        wrapped.pin = None if pin == "off" else pin
    hosts = [".localhost", "localhost", "127.0.0.1", "::1", *trusted]
    if interface not in ("0.0.0.0", "::", ""):
        hosts.append(interface)
    wrapped.trusted_hosts = hosts
    literals = (host.strip("[]").lower() for host in hosts if ":" in host.strip("[]"))
    wrapped.ipv6_hosts = {f"[{literal}]" for literal in literals}
    wrapped._failed_pin_auth.value = max(0, min(255, failures))
    return wrapped


def in_front(
    settings: Settings, application: Any, post_mortem: str | None, failures: int
) -> tuple[Any, PostMortem | None, Any]:
    """The app behind the debuggers asked for, the post-mortem one (which may hold
    requests) and Werkzeug's (``failures``: its wrong PINs in the images before); None for
    those not asked for."""
    holder = werkzeug_debugger = None
    if post_mortem:
        holder = application = PostMortem(application, post_mortem)
    if "werkzeug" in settings.dev:
        werkzeug_debugger = application = debugger(
            application,
            settings.http_interface,
            settings.debugger_pin,
            settings.debugger_trusted_host,
            failures=failures,
        )
    return application, holder, werkzeug_debugger


def failed_pins(app: Any) -> int:
    """Before a reload: the wrong PINs entered so far (None or any other app: 0), for the
    next image's debugger to start from."""
    return int(getattr(getattr(app, "_failed_pin_auth", None), "value", 0))


def _addressed_to_another_image(debugger: Any, environ: Any) -> bool:
    """A console command or PIN check carrying the secret of a previous process image."""
    from urllib.parse import parse_qs

    query = parse_qs(environ.get("QUERY_STRING", ""))
    if query.get("__debugger__") != ["yes"] or query.get("cmd", [""])[0] == "resource":
        return False
    secret = query.get("s", [None])[0]
    return secret is not None and secret != debugger.secret


def debugger_pin(app: Any) -> str:
    """What the banner says of the debugger's PIN."""
    pin = getattr(app, "pin", None)
    return pin if pin else "off (no PIN: anyone who reaches the page can run code)"


# --- --dev pdb: post-mortem on the terminal ---


class PostMortem:
    """Drops into a debugger on the terminal when a request raises, then lets the error go
    on (the client gets its 500). One session at a time: requests failing meanwhile wait
    their turn. ``holding`` counts requests held by a debugger, so time limits can stand
    aside while a developer is looking."""

    def __init__(self, app: Any, name: str) -> None:
        import importlib

        self.app = app
        self.name = name
        self.debugger = importlib.import_module(name)
        self._turn = threading.Lock()
        self.holding = 0

    def __call__(self, environ: Any, start_response: Any) -> Any:
        try:
            return self.app(environ, start_response)
        except Exception as error:
            self.inspect(error, f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}")
            raise

    def inspect(self, error: BaseException, where: str) -> None:
        with self._turn:
            self.holding += 1
            try:
                print(f"\n*** {type(error).__name__} in {where}: {error}", file=sys.stderr)
                print(f"*** {self.name} post-mortem; 'c' lets the request end", file=sys.stderr)
                self.debugger.post_mortem(error.__traceback__)
            finally:
                self.holding -= 1


def check_post_mortem(dev: Iterable[str], terminal: bool) -> str | None:
    """The post-mortem debugger asked for, if any; an error when it cannot work."""
    from devserve.errors import ConfigError
    from devserve.values import POST_MORTEM

    asked = [name for name in POST_MORTEM if name in dev]
    if not asked:
        return None
    if len(asked) > 1:
        raise ConfigError(f"--dev names {' and '.join(asked)}: choose one post-mortem debugger")
    name = asked[0]
    if not terminal:
        raise ConfigError(
            f"--dev {name} needs a terminal, and stdin is not one; start devserve from a "
            "terminal, or debug in the browser with --dev werkzeug"
        )
    import importlib.util

    if importlib.util.find_spec(name) is None:
        raise ConfigError(f"--dev {name}: {name} is not installed; pip install {name}")
    return name
