"""The command line: ``devserve [COMMAND] [OPTIONS] [TARGET]``.

Commands register themselves by subclassing :class:`Command`. ``server`` is the default:
``devserve examples/addons`` is ``devserve server examples/addons``. This module is the only
one that chooses exit codes: a :class:`DevserveError` becomes its one-sentence message on
stderr and its code; nothing a user can cause ends in a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from devserve import config
from devserve.errors import AppLoadError, ConfigError, DevserveError, ExitCode, UsageError

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["Command", "Help", "Server", "main"]

PROG = "devserve"
DEFAULT_COMMAND = "server"

_logger = logging.getLogger(__name__)

COMMANDS: dict[str, type[Command]] = {}  # filled by Command.__init_subclass__
WATCHER_DELAY = 0.25  # the watcher sets up after the first request, or after this long


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's, given the terminal width: argparse would import ``shutil`` (with ``bz2``
    and ``lzma``) for it at every start and reload, though only ``--help`` uses it."""

    def __init__(self, prog: str, **kwargs: Any) -> None:
        kwargs.setdefault("width", _terminal_columns() - 2)
        super().__init__(prog, **kwargs)


def _terminal_columns() -> int:
    """What ``shutil.get_terminal_size()`` says: ``COLUMNS``, else the terminal, else 80."""
    with contextlib.suppress(ValueError):
        if (columns := int(os.environ.get("COLUMNS", "0"))) > 0:
            return columns
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 80


class ArgumentParser(argparse.ArgumentParser):
    """Reports bad input as a UsageError instead of printing usage and exiting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if message.startswith("argument "):
            # A bad value: the parser's message already names the option and the problem.
            raise UsageError(message.removeprefix("argument "))
        raise UsageError(f"{message}; run '{self.prog} --help' to see the options")


class Command:
    """Base of every command. A subclass registers itself under its lowercased class name
    (or ``name``); the first line of its docstring is its summary in ``devserve help``."""

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name") or cls.__name__.lower()
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"command name {name!r} must match [a-z][a-z0-9_]*")
        cls.name = name
        COMMANDS[name] = cls

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def run(self, args: list[str]) -> int:
        raise NotImplementedError


class Help(Command):
    """List the commands."""

    def run(self, args: list[str]) -> int:
        width = max(len(name) for name in COMMANDS)
        lines = [
            f"usage: {PROG} [COMMAND] [OPTIONS] [TARGET]",
            "",
            "Commands:",
            *(f"  {name:<{width}}  {COMMANDS[name].summary()}" for name in sorted(COMMANDS)),
            "",
            f"With no command, '{DEFAULT_COMMAND}' runs. TARGET is an addons folder or a "
            "module:attribute WSGI app.",
            f"Run '{PROG} COMMAND --help' for the options of a command.",
        ]
        print("\n".join(lines))
        return ExitCode.OK


class Server(Command):
    """Serve an addons folder or a WSGI app (the default command)."""

    def parser(self) -> ArgumentParser:
        parser = ArgumentParser(
            prog=f"{PROG} {self.name}",
            description="Serve TARGET: an addons folder (every sub-folder with __init__.py "
            "and __manifest__.py is an addon) or a WSGI callable as module:attribute.",
            epilog="Settings are read from, lowest precedence first: defaults, the config "
            f"file, {config.ENV_PREFIX}<NAME> environment variables, the command line.",
        )
        parser.add_argument(
            "target",
            nargs="*",
            metavar="TARGET",
            help="addons folder(s), or module:attribute / module:factory()",
        )
        config.add_arguments(parser)
        return parser

    def settings(self, args: list[str]) -> config.Settings:
        namespace = vars(self.parser().parse_args(args))
        targets = namespace.pop("target")
        return config.resolve(config.merge_target(namespace, targets))

    def run(self, args: list[str]) -> int:
        return serve(self.settings(args))


def run(target: Any, settings: dict[str, Any]) -> int:
    """``devserve.run()``: serve a WSGI callable, a ``module:attribute`` or an addons folder
    with keyword settings, exactly as the command line would."""
    values = config.from_keywords(settings)
    application = None
    if callable(target):
        application = target
    elif isinstance(target, (str, os.PathLike)):
        values = config.merge_target(values, [os.fspath(target)])
    elif target is not None:
        raise ConfigError(
            f"cannot serve a {type(target).__name__}: give a WSGI callable, "
            "'module:attribute' or an addons folder"
        )
    return serve(config.resolve(values), application)


def serve(settings: config.Settings, application: WSGIApplication | None = None) -> int:
    """Load, bind (or adopt), serve until stopped or reloaded: the ``server`` command once
    settings are resolved. A reload re-execs this process and never returns. An
    ``application`` given (by ``devserve.run()``) is served instead of the settings' target."""
    with _interruptible_startup():
        return _serve(settings, application)


def _serve(settings: config.Settings, given: WSGIApplication | None) -> int:
    from devserve import app, log, reloader, servers

    log.setup_logging(settings.log_level, settings.logfile)
    reloaded = reloader.reload_started()
    if settings.save and settings.config and not reloaded:  # the first image saved them
        config.save_config_file(settings, settings.config)
        _logger.info("settings saved to %s", settings.config)
    if given is None:
        app.check_target(settings)
    if "werkzeug" in settings.dev:
        from devserve import debug

        debug.check_debugger_safety(settings.http_interface, settings.debugger_allow_remote)
        if settings.workers:
            raise ConfigError(
                "--dev werkzeug cannot run with --workers: the debugger console needs every "
                "request of its session to reach the same process; drop --workers (threaded "
                "mode) to debug"
            )
    post_mortem = None
    if _post_mortem_asked(settings):
        from devserve import debug

        post_mortem = debug.check_post_mortem(settings.dev, sys.stdin.isatty())
    if settings.stop_after_init:
        if given is None:
            app.load_app(settings)
        _logger.info("loaded %s; stopping after init", app.describe_target(settings, given))
        return ExitCode.OK
    # Written again after a reload (same PID): this image owns it, and removes it at exit.
    pidfile = servers.Pidfile(settings.pidfile)
    pidfile.write()
    try:
        return _run_server(settings, given, reloaded, pidfile, post_mortem)
    finally:
        pidfile.remove()


def _debugger_attached() -> bool:
    """Run under debugpy or PyCharm's debugger (pydevd): a developer may pause at a
    breakpoint for as long as they like, so the time limits are off."""
    return "debugpy" in sys.modules or "pydevd" in sys.modules or sys.gettrace() is not None


def _post_mortem_asked(settings: config.Settings) -> bool:
    return bool(set(settings.dev) & set(config.POST_MORTEM))


def _make_server(
    settings: config.Settings,
    application: WSGIApplication,
    sock: Any,
    given: Any,
    broken: bool,
    paused: Callable[[], bool],
) -> Any:
    """The server of the mode asked for: threaded, or prefork with ``--workers``."""
    from devserve import app, limits, reloader, servers

    common: dict[str, Any] = {
        "shutdown_grace": settings.shutdown_grace,
        "reload_grace": settings.reload_grace,
        "on_changes": reloader.prepare_reload,
        "signal_actions": _signal_actions(settings, given),
        "max_body": settings.limit_request_body * limits.MIB,
    }
    adopted = reloader.adopt_workers()
    if not settings.workers:
        for pid, _number, heartbeat in adopted:  # --workers was dropped: not ours to keep
            os.kill(pid, signal.SIGTERM)
            os.close(heartbeat)
        limits.set_memory_hard(settings.limit_memory_hard)
        return servers.ThreadedServer(
            application,
            sock,
            max_threads=settings.max_http_threads,
            connections=reloader.adopt_connections(),
            limits=limits.Limits.from_settings(settings, debugging=_debugger_attached()),
            paused=paused,
            **common,
        )
    from devserve import prefork

    now = time.monotonic()
    workers = [  # serving already: never taken for workers that fail to start
        prefork.Worker(pid, number, fd, last_seen=now, ready=True) for pid, number, fd in adopted
    ]
    if broken and workers:
        _logger.error("the new code did not load: the workers of the previous code go on serving")
    return prefork.PreforkServer(
        application,
        sock,
        workers=settings.workers,
        limits=limits.Limits.from_settings(
            settings, debugging=_post_mortem_asked(settings) or _debugger_attached()
        ),
        adopted=workers,
        keep_adopted=broken and bool(workers),
        report_roots=app.watch_roots(settings, given),
        **common,
    )


def _run_server(
    settings: config.Settings,
    given: WSGIApplication | None,
    reloaded: Any,
    pidfile: Any,
    post_mortem: str | None,
) -> int:
    from devserve import app, reloader, servers

    sock = reloader.adopt_socket() or servers.bind_socket(
        settings.http_interface, settings.http_port
    )
    load_started = time.time()
    if given is None:
        application, broken_files = _load_or_show_error(settings)
    else:
        application, broken_files = app.wrap_app(given, settings), []
    holder = None  # the post-mortem debugger, which may hold requests
    if post_mortem:
        from devserve import debug

        holder = application = debug.PostMortem(application, post_mortem)
    if "werkzeug" in settings.dev:
        from devserve import debug

        application = debug.debugger(
            application,
            settings.http_interface,
            settings.debugger_pin,
            settings.debugger_trusted_host,
        )
    watcher = _Watch(settings, broken_files, since=load_started, given=given)
    server = _make_server(
        settings,
        application,
        sock,
        given,
        broken=bool(broken_files),
        paused=lambda: holder is not None and holder.holding > 0,
    )

    def announce() -> None:
        if reloaded:
            now = time.monotonic()
            took = (now - reloaded.first_seen) * 1000
            _logger.info("reloaded in %.0f ms: %s", took, reloaded.summary(now))
        else:
            _print_banner(settings, server, given, application)
        watcher.start_in_background(server.notify, after=server.served_first)

    try:
        outcome = server.run(on_ready=announce)
        watcher.stop()  # before the server's wake-up pipe closes: nothing notifies after
        if outcome is servers.Outcome.RELOAD and server.reload is not None:
            reloader.reexec(server.listener, server.reload, server.handover, server.worker_handover)
        code = ExitCode.FORCED if outcome is servers.Outcome.FORCED else ExitCode.OK
        if server.unfinished:
            # Non-daemon request threads would hold the interpreter open: leave now.
            pidfile.remove()
            logging.shutdown()
            os._exit(code)
    finally:
        watcher.stop()
        server.close()  # idle pooled threads end
    _logger.info("stopped")
    return code


@contextlib.contextmanager
def _interruptible_startup() -> Iterator[None]:
    """Until the server's own handlers take over, INT and TERM interrupt start-up (an app
    import that hangs can still be stopped). After a phoenix reload both arrive blocked:
    unblock them here, so one sent during the exec gap stops this image as asked."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _signal_actions(settings: config.Settings, given: Any) -> dict[int, Callable[[], None]]:
    """QUIT dumps every thread's stack; USR1 reports cache statistics, USR2 with sizes.
    (Imported on first use: start-up is reload latency.)"""
    reporter: list[Any] = []

    def report(sizes: bool) -> None:
        from devserve import app, debug

        if not reporter:
            reporter.append(debug.CacheReporter(app.watch_roots(settings, given)))
        reporter[0].request(sizes)

    def dump() -> None:
        from devserve import debug

        debug.dump_stacks()

    return {
        signal.SIGQUIT: dump,
        signal.SIGUSR1: lambda: report(False),
        signal.SIGUSR2: lambda: report(True),
    }


def _load_or_show_error(settings: config.Settings) -> tuple[WSGIApplication, list[str]]:
    """The app; with --dev reload, an app that fails to load is replaced by a 500 page
    that shows why, and the files of the traceback are watched too."""
    from devserve import app, reloader

    try:
        return app.load_app(settings), []
    except (AppLoadError, ConfigError) as error:
        if not settings.reload:
            raise
        _logger.error(
            "%s; serving the error until a watched file changes",
            error,
            exc_info=error.__cause__ or error,
        )
        return reloader.error_app(error), reloader.traceback_files(error)


def _print_banner(settings: config.Settings, server: Any, given: Any, served: Any) -> None:
    from devserve import app, log

    rows = [
        ("mode", server.description),
        ("serving", app.describe_target(settings, given)),
        ("dev", ",".join(settings.dev) or "-"),
        ("pid", str(os.getpid())),
    ]
    if "werkzeug" in settings.dev:
        from devserve import debug

        rows.append(("debugger PIN", debug.debugger_pin(served)))
    log.print_banner(f"devserve serving on {server.url}", rows)


class _Watch:
    """``--dev reload``'s watcher: set up after the server is up (so a big tree never
    delays serving), reporting batches of changes to the server's control loop."""

    def __init__(
        self, settings: config.Settings, files: list[str], since: float, given: Any = None
    ) -> None:
        self.settings = settings
        self.files = files
        self.since = since
        self.given = given  # an app object handed to devserve.run(), if any
        self.watcher: Any = None
        self.stopped = False
        self._lock = threading.Lock()  # between set-up (its own thread) and stop()

    def start_in_background(self, notify: Callable[[Any], object], after: threading.Event) -> None:
        """Set the watches up in a thread, once the first request was answered (after a
        reload, someone is waiting for it) or 250 ms have passed. Changes made meanwhile are
        caught up by modification time."""
        if not self.settings.reload:
            return
        thread = threading.Thread(
            target=self._start, args=(notify, after), name="devserve.watcher.setup", daemon=True
        )
        thread.start()

    def _start(self, notify: Callable[[Any], object], after: threading.Event) -> None:
        after.wait(WATCHER_DELAY)
        from devserve import app, reloader, watcher

        roots = app.watch_roots(self.settings, self.given)
        with self._lock:
            if self.stopped:
                return
            self.watcher = watcher.Watcher(
                roots=roots,
                files=self.files,
                on_batch=lambda paths, first: notify(reloader.FileChanges(paths, first)),
                path_filter=watcher.PathFilter(
                    self.settings.reload_include, self.settings.reload_exclude
                ),
                backend=self.settings.reload_backend,
                since=self.since,
            )
            took = self.watcher.start()
        _logger.info(
            "watching %s with %s (ready in %.0f ms)",
            reloader.describe_paths(roots) or "nothing",
            self.watcher.describe(),
            took * 1000,
        )

    def stop(self) -> None:
        self.stopped = True
        if self.watcher is not None:  # a set-up under way: ends early instead of being waited
            self.watcher.cancel()
        with self._lock:
            if self.watcher is not None:
                self.watcher.stop()


def _looks_like_target(word: str) -> bool:
    return ":" in word or os.sep in word or word.startswith(".") or os.path.isdir(word)


def _dispatch(argv: list[str]) -> int:
    if not argv:
        return COMMANDS[DEFAULT_COMMAND]().run([])
    first = argv[0]
    if first in ("-h", "--help") and len(argv) == 1:
        return Help().run([])
    if first in COMMANDS:
        return COMMANDS[first]().run(argv[1:])
    if first.startswith("-") or _looks_like_target(first):
        return COMMANDS[DEFAULT_COMMAND]().run(argv)
    known = ", ".join(sorted(COMMANDS))
    raise UsageError(
        f"unknown command {first!r} (known commands: {known}); to serve a folder or an app, "
        "give an existing directory or module:attribute"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run devserve; returns the exit code (the console script exits with it)."""
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    except DevserveError as error:
        _logger.debug("error details", exc_info=error)
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:  # INT or TERM during start-up: a normal stop
        return ExitCode.OK
    except SystemExit as exit:
        # argparse's --help exits; callers of main() get its code returned instead.
        return exit.code if isinstance(exit.code, int) else ExitCode.OK
