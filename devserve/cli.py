"""The command line: ``devserve [COMMAND] [OPTIONS] [TARGET]``.

Commands register themselves by subclassing :class:`Command`. ``server`` is the default:
``devserve examples/addons`` is ``devserve server examples/addons``. A name that is no
built-in command is looked for in the addons path, as ``<addon>/cli/<name>.py``
(:mod:`devserve.addon_commands`). This module is the only one that chooses exit codes: a
:class:`DevserveError` becomes its one-sentence message on stderr and its code; nothing a
user can cause ends in a traceback.
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
from devserve.errors import (
    AppLoadError,
    ConfigError,
    DevserveError,
    ExitCode,
    NotWSGIError,
    UsageError,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from devserve.addon_commands import Found
    from devserve.frameworks import Integration

__all__ = ["Command", "Help", "Scaffold", "Server", "main"]

PROG = "devserve"
DEFAULT_COMMAND = "server"

_logger = logging.getLogger(__name__)

COMMANDS: dict[str, type[Command]] = {}  # filled by Command.__init_subclass__


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
    (or ``name``); the first line of its docstring is its summary in ``devserve help``.
    ``run(args)`` gets the words of the command line but the command's name, and returns
    the exit code."""

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name") or cls.__name__.lower()
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"command name {name!r} must match [a-z][a-z0-9_]*")
        if COMMANDS.get(name, cls) is not cls:
            raise ValueError(
                f"command {name!r} of {_source(cls)} is already defined in "
                f"{_source(COMMANDS[name])}; give it another name"
            )
        cls.name = name
        COMMANDS[name] = cls

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def run(self, args: list[str]) -> int:
        raise NotImplementedError


def version() -> str:
    """``devserve 0.1.0 (Python 3.11.7)``."""
    from devserve import __version__

    return f"{PROG} {__version__} (Python {sys.version.split()[0]})"


def _source(command: type) -> str:
    """The file defining a command class (its module's name when it has none)."""
    module = sys.modules.get(command.__module__)
    return getattr(module, "__file__", None) or command.__module__


class Help(Command):
    """List the commands."""

    def run(self, args: list[str]) -> int:
        _paths, found = _addon_commands(args)
        for problem in found.problems:
            print(f"{PROG}: warning: {problem}", file=sys.stderr)
        rows = [(name, COMMANDS[name].summary()) for name in sorted(COMMANDS)]
        from_addons = [
            (name, f"{command.summary} [addon {command.addon}]".lstrip())
            for name, command in sorted(found.commands.items())
        ]
        width = max(len(name) for name, _summary in rows + from_addons)
        lines = [
            f"usage: {PROG} [COMMAND] [OPTIONS] [TARGET]",
            "",
            "Commands:",
            *(f"  {name:<{width}}  {summary}" for name, summary in rows),
        ]
        if from_addons:
            lines += ["", "Addon commands:"]
            lines += [f"  {name:<{width}}  {summary}" for name, summary in from_addons]
        lines += [
            "",
            f"With no command, '{DEFAULT_COMMAND}' runs. TARGET is an addons folder or a "
            "module:attribute WSGI app.",
            f"Addon commands are <addon>/cli/<name>.py files in the addons path ('{PROG} help "
            "DIRS' lists those of DIRS).",
            f"Run '{PROG} COMMAND --help' for the options of a command.",
        ]
        print("\n".join(lines))
        return ExitCode.OK


class Scaffold(Command):
    """Create an addon that serves right away: manifest, a routed page, a static file, a test."""

    def run(self, args: list[str]) -> int:
        parser = ArgumentParser(
            prog=f"{PROG} {self.name}",
            description="Create the addon NAME in the addons folder DEST: __manifest__.py, "
            "controllers.py with a page at /NAME, static/style.css and tests/test_NAME.py. "
            "An existing folder is never overwritten.",
        )
        parser.add_argument("addon", metavar="NAME", help="a Python identifier, e.g. my_shop")
        parser.add_argument(
            "dest",
            metavar="DEST",
            nargs="?",
            default=".",
            help="the addons folder to create it in, created if missing (default: the "
            "current directory)",
        )
        namespace = parser.parse_args(args)
        from devserve import scaffold

        folder = scaffold.create(namespace.addon, namespace.dest)
        print(
            f"created addon {namespace.addon!r} in {folder}\n"
            f"serve it with: {PROG} {os.path.dirname(folder)}  (then open /{namespace.addon})\n"
            f"test it with:  python -m pytest {os.path.join(folder, 'tests')}"
        )
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
        parser.add_argument(
            "-V", "--version", action="version", version=version(), help="print the version"
        )
        config.add_arguments(parser)
        return parser

    def settings(self, args: list[str]) -> config.Settings:
        namespace = vars(self.parser().parse_args(args))
        targets = namespace.pop("target")
        return config.resolve(config.merge_target(namespace, targets))

    def run(self, args: list[str]) -> int:
        return serve(self.settings(args))


class Gevent(Server):
    """Serve under gevent, a greenlet per connection: many idle connections (long-polling)."""

    def run(self, args: list[str]) -> int:
        from devserve import evented

        if not evented.available():
            raise ConfigError(
                f"gevent mode needs gevent, which is not installed: {evented.INSTALL_HINT}"
            )
        settings = self.settings(args)
        if settings.workers:
            raise ConfigError(
                "gevent mode serves from one process and cannot take --workers; for prefork "
                "with an evented child, run 'devserve --workers N --gevent-port' instead"
            )
        evented.ensure_patched()
        return serve(settings, evented=True)


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


def serve(
    settings: config.Settings, application: WSGIApplication | None = None, evented: bool = False
) -> int:
    """Load, bind (or adopt), serve until stopped or reloaded: the ``server`` command once
    settings are resolved. A reload re-execs this process and never returns. An
    ``application`` given (by ``devserve.run()``) is served instead of the settings' target.
    ``evented``: on gevent's server (``devserve gevent``, monkey-patched already)."""
    with _interruptible_startup():
        return _serve(settings, application, evented)


def _serve(settings: config.Settings, given: WSGIApplication | None, evented: bool) -> int:
    from devserve import app, log, reloader, servers, watching

    log.setup_logging(settings.log_level, settings.logfile)
    reloaded = reloader.reload_started()
    remembered = watching.take_remembered()  # before any of the app's code runs
    if settings.save and settings.config and not reloaded:  # the first image saved them
        config.save_config_file(settings, settings.config)
        _logger.info("settings saved to %s", settings.config)
    if given is None:
        app.check_target(settings)
    else:
        app.check_wsgi(given, app.describe_target(settings, given))
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
    if settings.gevent_port is not None and not settings.workers and not evented:
        _logger.warning("--gevent-port is ignored: the evented child runs beside --workers")
    # Written again after a reload (same PID): this image owns it, and removes it at exit.
    pidfile = servers.Pidfile(settings.pidfile)
    pidfile.write()
    try:
        return _run_server(settings, given, reloaded, pidfile, post_mortem, evented, remembered)
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
    evented: bool,
    on_changes: Callable[[Any], frozenset[str]],
    on_imported: Callable[[list[str]], None] | None,
) -> Any:
    """The server of the mode asked for: threaded, gevent, or prefork with ``--workers``."""
    from devserve import limits, project, reloader, servers

    common: dict[str, Any] = {
        "shutdown_grace": settings.shutdown_grace,
        "reload_grace": settings.reload_grace,
        "on_changes": on_changes,
        "signal_actions": _signal_actions(settings, given),
        "max_body": settings.limit_request_body * limits.MIB,
    }
    if evented:
        from devserve import evented as gevent_mode

        limits.set_memory_hard(settings.limit_memory_hard)
        return gevent_mode.GeventServer(
            application,
            sock,
            connections=reloader.adopt_connections(),
            limits=limits.Limits.from_settings(settings, debugging=_debugger_attached()),
            parent=gevent_mode.parent_pid(),
            **common,
        )
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
    from devserve import cron, prefork

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
        report_roots=project.roots(settings, given),
        evented=_evented_child(settings, given),
        cron_jobs=[] if broken else _served_jobs(settings, evented=False),
        cron_workers=settings.max_cron_threads,
        cron_time_limit=cron.time_limit(settings),
        on_imported=on_imported,
        **common,
    )


def _evented_child(settings: config.Settings, given: Any) -> Any:
    """With ``--gevent-port``: the prefork master's evented child, on a socket bound once
    (or kept from the previous image)."""
    from devserve import reloader, servers

    sock, previous = reloader.adopt_evented()
    if settings.gevent_port is None:
        if sock is not None:  # --gevent-port was dropped: the previous child goes
            for pid in previous:
                os.kill(pid, signal.SIGTERM)
            sock.close()
        return None
    from devserve import evented

    if given is not None:
        raise ConfigError(
            "--gevent-port needs a target the evented child can load itself: an addons "
            "folder or module:attribute, not an app object handed to devserve.run()"
        )
    if not evented.available():
        raise ConfigError(
            f"--gevent-port needs gevent, which is not installed: {evented.INSTALL_HINT}"
        )
    if sock is None:
        sock = servers.bind_socket(settings.http_interface, settings.gevent_port)
    port = sock.getsockname()[1]
    return evented.EventedChild(sock, evented.child_environment(settings, port), previous, port)


def _evented_child_socket(evented: bool) -> Any:
    if not evented:
        return None
    from devserve import evented as gevent_mode

    return gevent_mode.child_socket()


def _run_server(
    settings: config.Settings,
    given: WSGIApplication | None,
    reloaded: Any,
    pidfile: Any,
    post_mortem: str | None,
    evented: bool,
    remembered: list[str],
) -> int:
    from devserve import app, limits, reloader, servers, watching

    limits.raise_open_files()  # every mode: as many connections as the system allows
    sock = reloader.adopt_socket() or _evented_child_socket(evented)
    sock = sock or servers.bind_socket(settings.http_interface, settings.http_port)
    if "werkzeug" in settings.dev:
        from devserve import debug

        debug.check_socket_safety(sock, settings.debugger_allow_remote)
    load_started = time.time()
    if given is None:
        application, imported, broken_files = _load_or_show_error(settings, reloaded)
    else:
        application, imported, broken_files = app.wrap_app(given, settings), given, []
    integration, application = _integration(settings, imported, application, bool(broken_files))
    crons = _cron_runner(settings, evented) if given is None and not broken_files else None
    holder = None  # the post-mortem debugger, which may hold requests
    if post_mortem:
        from devserve import debug

        holder = application = debug.PostMortem(application, post_mortem)
    debugger = None
    if "werkzeug" in settings.dev:
        from devserve import debug

        debugger = application = debug.debugger(
            application,
            settings.http_interface,
            settings.debugger_pin,
            settings.debugger_trusted_host,
        )
    watch = watching.ReloadWatch(
        settings,
        broken_files,
        since=load_started,
        given=given,
        integration=integration,
        in_process=not settings.workers,  # prefork: the workers serve
        remembered=remembered,
    )
    server = _make_server(
        settings,
        application,
        sock,
        given,
        broken=bool(broken_files),
        paused=lambda: holder is not None and holder.holding > 0,
        evented=evented,
        on_changes=watch.on_changes,
        on_imported=watch.learned if settings.reload else None,
    )
    server.changes_quiet_for = watch.quiet_for  # a reload waits for a checkout to end
    evented_child = bool(getattr(server, "parent", None))  # the prefork master's

    def announce() -> None:
        if reloaded:
            now = time.monotonic()
            took = (now - reloaded.first_seen) * 1000
            _logger.info("reloaded in %.0f ms: %s", took, reloaded.summary(now))
        elif evented_child:
            _logger.info("evented child serving on %s (pid %d)", server.url, os.getpid())
        else:
            _print_banner(settings, server, given, application)
        if not evented_child:  # its master watches, and reports what the framework says
            watch.start_in_background(server.notify, after=server.served_first)
            _framework_started(integration, server.served_first, in_thread=not settings.workers)
        if crons is not None:
            crons.start()

    try:
        outcome = server.run(on_ready=announce)
        watch.stop()  # before the server's wake-up pipe closes: nothing notifies after
        crons_done, outcome = _stop_crons(crons, settings, outcome)
        if outcome is servers.Outcome.RELOAD and server.reload is not None:
            watch.remember()
            if debugger is not None:
                from devserve import debug

                debug.hand_over_failures(debugger)
            reloader.reexec(
                server.listener,
                server.reload,
                server.handover,
                server.worker_handover,
                getattr(server, "evented_handover", None),
            )
        code = ExitCode.FORCED if outcome is servers.Outcome.FORCED else ExitCode.OK
        if server.unfinished or not crons_done:
            # Non-daemon request threads would hold the interpreter open, and a cron job
            # left running could block its shutdown: leave now.
            pidfile.remove()
            logging.shutdown()
            os._exit(code)
    finally:
        watch.stop()
        server.close()  # idle pooled threads end
    _logger.info("stopped")
    return code


def _integration(
    settings: config.Settings, imported: Any, application: WSGIApplication, broken: bool
) -> tuple[Integration, WSGIApplication]:
    """The framework integration (in --dev modes only), and the app it prepared for
    development and wrapped (Django's static files)."""
    from devserve import frameworks

    if not settings.dev or broken:
        return frameworks.Integration(imported, settings), application
    integration = frameworks.detect(imported, settings)
    try:
        integration.prepare()
        return integration, integration.wrap(application)
    except Exception:  # the app serves as it is
        _logger.exception("adjusting %s for development failed", integration.name)
        return integration, application


def _framework_started(
    integration: Integration, served_first: threading.Event, in_thread: bool
) -> None:
    """What the framework reports once serving (Django's system checks). In a thread, once
    the first request was answered (or 250 ms passed), so it never delays serving; not in
    prefork's master: there at once, before any worker is forked (a fork must not copy a
    thread that is half-way through an import)."""
    from devserve.watching import WATCHER_DELAY

    def report() -> None:
        if in_thread:
            served_first.wait(WATCHER_DELAY)
        try:
            integration.started()
        except Exception:
            _logger.exception("%s's start-up checks failed", integration.name)

    if not integration.reports:
        return
    if in_thread:
        threading.Thread(target=report, name="devserve.frameworks", daemon=True).start()
    else:
        report()


def _served_jobs(settings: config.Settings, evented: bool) -> list[Any]:
    """The @cron jobs of the addons served. None for a plain WSGI app, nor in gevent mode
    (as in Odoo: cron runs in threaded mode's threads or in prefork's cron workers)."""
    if evented or settings.app or not settings.addons_path:
        return []
    from devserve import addons, cron

    return cron.served_jobs(addon.name for addon in addons.imported())


def _cron_runner(settings: config.Settings, evented: bool) -> Any:
    """The threaded server's cron threads (prefork runs cron workers instead)."""
    jobs = _served_jobs(settings, evented)
    if settings.workers or not jobs:
        return None
    from devserve import cron

    return cron.CronRunner(jobs, settings.max_cron_threads, cron.time_limit(settings))


def _stop_crons(crons: Any, settings: config.Settings, outcome: Any) -> tuple[bool, Any]:
    """Running cron jobs get the grace period requests got (a forced stop: none). Returns
    whether none is left running, and the outcome: a second INT/TERM meanwhile (which
    raises KeyboardInterrupt here, as during start-up) forces the stop."""
    from devserve.servers import Outcome

    if crons is None:
        return True, outcome
    grace = {Outcome.RELOAD: settings.reload_grace, Outcome.STOP: settings.shutdown_grace}
    try:
        return crons.stop(grace.get(outcome, 0.0)), outcome
    except KeyboardInterrupt:
        _logger.warning("forced stop: running cron jobs cut short")
        return False, Outcome.FORCED


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
        from devserve import debug, project

        if not reporter:
            reporter.append(debug.CacheReporter(project.roots(settings, given)))
        reporter[0].request(sizes)

    def dump() -> None:
        from devserve import debug

        debug.dump_stacks()

    return {
        signal.SIGQUIT: dump,
        signal.SIGUSR1: lambda: report(False),
        signal.SIGUSR2: lambda: report(True),
    }


def _load_or_show_error(
    settings: config.Settings, reloaded: Any
) -> tuple[WSGIApplication, Any, list[str]]:
    """The app served, the callable imported (None for addons), and the files to watch
    besides the project's. With --dev reload, an app that fails to load is replaced by a
    500 page that shows why, and the files of the traceback are watched too. An ASGI app
    is refused at first start: serving an error page could not make it work."""
    from devserve import app, reloader

    try:
        application, imported = app.load(settings)
        return application, imported, []
    except (AppLoadError, ConfigError) as error:
        if not settings.reload or (isinstance(error, NotWSGIError) and not reloaded):
            raise
        _logger.error(
            "%s; serving the error until a watched file changes",
            error,
            exc_info=error.__cause__ or error,
        )
        return reloader.error_app(error), None, reloader.traceback_files(error)


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


def _looks_like_target(word: str) -> bool:
    return ":" in word or os.sep in word or word.startswith(".") or os.path.isdir(word)


# Options that may come before a command's name, to say where its addons are.
_LOCATING_OPTIONS = ("--addons-path", "-c", "--config")
_LOCATING_PREFIXES = ("--addons-path=", "--config=")


def _command_position(argv: list[str]) -> int | None:
    """Where the command's name is: after any words that locate addons (an addons folder,
    ``--addons-path DIRS``, ``-c FILE``). None when there is no name: an option or a target
    comes first, which is the default command's line."""
    position = 0
    while position < len(argv):
        word = argv[position]
        if word in COMMANDS:
            return position
        if word in _LOCATING_OPTIONS:
            position += 2
        elif word.startswith(_LOCATING_PREFIXES) or os.path.isdir(word):
            position += 1
        elif config.FOLDERS_MAY_BE_GONE and not word.startswith("-"):
            position += 1  # an addons folder gone since the image before took this line
        elif word.startswith("-") or _looks_like_target(word):
            return None
        else:
            return position
    return None


def _addon_commands(words: list[str], only: str | None = None) -> tuple[tuple[str, ...], Found]:
    """The addons path that ``words`` (or else the environment and the config file) give,
    and the addon commands found in it."""
    from devserve import addon_commands

    paths = Server().settings(words).addons_path
    reserved = {name: _source(command) for name, command in COMMANDS.items()}
    return paths, addon_commands.find(paths, reserved, only)


def _addon_command(name: str, before: list[str], after: list[str]) -> type[Command]:
    """The command ``name`` of the addons that the words around it locate (or else the
    environment and the config file), loaded from its file."""
    from devserve import addon_commands

    paths, found = _addon_commands(before + addon_commands.addons_path_options(after), only=name)
    if found.problems:
        raise found.problems[0]
    if name not in found.commands:
        known = ", ".join(sorted(COMMANDS))
        where = (
            f"no addon of {', '.join(paths)} has cli/{name}.py"
            if paths
            else "give --addons-path DIRS for an addon command"
        )
        raise UsageError(
            f"unknown command {name!r} (known commands: {known}; {where}); to serve a folder "
            "or an app, give an existing directory or module:attribute"
        )
    return addon_commands.load(found.commands[name], Command)


def _dispatch(argv: list[str]) -> int:
    if argv in (["-h"], ["--help"]):
        return Help().run([])
    from devserve import reloader

    if reloader.RELOAD_ENV in os.environ:
        # A server's next image: the same command line, whatever became of its folders.
        config.FOLDERS_MAY_BE_GONE = True
    position = _command_position(argv)
    if position is None:
        return COMMANDS[DEFAULT_COMMAND]().run(argv)
    name, before, after = argv[position], argv[:position], argv[position + 1 :]
    command = COMMANDS.get(name) or _addon_command(name, before, after)
    return command().run(before + after)


def report(error: DevserveError) -> int:
    """Say what went wrong in one line on stderr; the exit code it ends with."""
    _logger.debug("error details", exc_info=error)
    print(f"{PROG}: error: {error}", file=sys.stderr)
    return error.exit_code


def main(argv: Sequence[str] | None = None) -> int:
    """Run devserve; returns the exit code (the console script exits with it)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started as a background job of a script, which ignores INT: CTRL-C and `kill
        # -INT` must still stop devserve (a second one forces the stop).
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    except DevserveError as error:
        return report(error)
    except KeyboardInterrupt:  # INT or TERM during start-up: a normal stop
        return ExitCode.OK
    except SystemExit as exit:
        # argparse's --help exits; callers of main() get its code returned instead.
        return exit.code if isinstance(exit.code, int) else ExitCode.OK
