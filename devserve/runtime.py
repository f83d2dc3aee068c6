"""The composition root: settings in, a server running the app out, and what happens around
it: settings -> the app (with what it serves) -> the framework's dev integration and the
debugger -> a server of the mode (threaded, prefork, gevent) on the listen socket (bound,
or adopted after a reload) -> the watcher, cron -> run -> a reload (phoenix exec) or a stop.

The only module that imports both the engine (``devserve._engine``, ``servers``) and the
addons platform (``app``, ``addons``, ``cron``). ``cli`` calls :func:`serve`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from devserve import (
    app,
    config,
    frameworks,
    limits,
    log,
    project,
    reloader,
    servers,
    status,
    values,
    watching,
)
from devserve.errors import ConfigError, ExitCode

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

    from devserve import livereload
    from devserve._engine import warm
    from devserve._engine.children import Companion
    from devserve._engine.devroutes import DevRoutes
    from devserve._engine.evented_child import EventedChild
    from devserve.cron import CronRunner, Job

__all__ = ["check_gevent", "is_next_image", "run", "serve"]

_logger = logging.getLogger(__name__)


def is_next_image() -> bool:
    """Whether this process is the next image of a reload (its hand-over still to take)."""
    return reloader.HANDOVER_ENV in os.environ


def check_gevent() -> None:
    """``devserve gevent`` without gevent: one line saying how to install it."""
    from devserve._engine import gevent  # here: only where a mode needs it

    if not gevent.available():
        raise ConfigError(
            f"gevent mode needs gevent, which is not installed: {gevent.INSTALL_HINT}"
        )


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
    ``evented``: in gevent mode (``devserve gevent``, monkey-patched already)."""
    if evented:
        from devserve._engine import gevent  # here: only where a mode needs it

        check_gevent()
        if settings.workers:
            raise ConfigError(
                "gevent mode serves from one process and cannot take --workers; for prefork "
                "with an evented child, run 'devserve --workers N --gevent-port' instead"
            )
        gevent.ensure_patched()
    with _interruptible_startup():
        return _serve(settings, application, evented)


def _serve(settings: config.Settings, given: WSGIApplication | None, evented: bool) -> int:
    log.setup_logging(settings.log_level, settings.logfile)
    handover = reloader.Handover.decode()  # before any of the app's code runs
    reloaded = handover.reload
    if settings.save and settings.config and not reloaded:  # the first image saved them
        config.save_config_file(settings, settings.config)
        _logger.info("settings saved to %s", settings.config)
    if given is None:
        app.check_target(settings)
    else:
        app.check_wsgi(given, app.describe_target(settings, given))
    if "werkzeug" in settings.dev:
        from devserve import debug  # here: only with the debugger (start-up time)

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
        if _reloads_warm(settings, given, evented):
            return _run_warm_parent(settings, handover, pidfile, post_mortem, evented)
        return _run_server(settings, given, handover, pidfile, post_mortem, evented)
    finally:
        pidfile.remove()


def _reloads_warm(settings: config.Settings, given: WSGIApplication | None, evented: bool) -> bool:
    """Warm reloads: with --dev reload, unless asked otherwise, serving a target (an app
    object handed to devserve.run() lives in this process), not with --gevent-port nor as
    the evented child, and not under an IDE's debugger (it follows an exec, not a fork)."""
    from devserve._engine.evented_child import PARENT_ENV

    return (
        settings.reload
        and settings.reload_mode == "warm"
        and not (settings.workers and settings.gevent_port is not None)
        and given is None
        and not (evented and PARENT_ENV in os.environ)
        and not _debugger_attached()
    )


def _run_warm_parent(
    settings: config.Settings,
    handover: reloader.Handover,
    pidfile: servers.Pidfile,
    post_mortem: str | None,
    evented: bool = False,
) -> int:
    """The warm parent: the listen socket and the signals, a serving child forked per code
    generation (each runs :func:`_run_server`), an exec when a reload needs a fresh image."""
    from devserve._engine import preload, warm

    limits.raise_open_files()
    sock = handover.listener or servers.bind_socket(settings.http_interface, settings.http_port)
    if "werkzeug" in settings.dev:
        from devserve import debug

        debug.check_socket_safety(sock, settings.debugger_allow_remote)

    def serve_child(handed: reloader.Handover, channel: warm.Channel) -> int:
        return _run_server(settings, None, handed, pidfile, post_mortem, evented, parent=channel)

    config_file = {os.path.abspath(settings.config)} if settings.config else set()
    parent = warm.WarmParent(
        sock,
        handover,
        serve_child,
        preloaded=preload.Preloaded(),
        exec_files=frozenset(config_file),
        shutdown_grace=settings.shutdown_grace,
        reload_grace=settings.reload_grace,
        signal_actions={signal.SIGQUIT: _signal_actions(settings, None)[signal.SIGQUIT]},
    )
    try:
        outcome = parent.run()
        if outcome is servers.Outcome.RELOAD:
            reloader.reexec(parent.handover())
    finally:
        parent.close()
    if parent.first_code is not None:
        return parent.first_code
    _logger.info("stopped")
    return ExitCode.FORCED if outcome is servers.Outcome.FORCED else ExitCode.OK


def _debugger_attached() -> bool:
    """Run under debugpy or PyCharm's debugger (pydevd): a developer may pause at a
    breakpoint for as long as they like, so the time limits are off."""
    return "debugpy" in sys.modules or "pydevd" in sys.modules or sys.gettrace() is not None


def _post_mortem_asked(settings: config.Settings) -> bool:
    return bool(set(settings.dev) & set(values.POST_MORTEM))


def _make_server(
    settings: config.Settings,
    application: WSGIApplication,
    sock: socket.socket,
    handover: reloader.Handover,
    *,
    served: app.Served,
    given: WSGIApplication | None,
    broken: bool,
    paused: Callable[[], bool],
    evented: bool,
    evented_child: EventedChild | None,
    on_changes: Callable[[reloader.FileChanges], frozenset[str]],
    on_imported: Callable[[list[str]], None] | None,
    parent: warm.Channel | None = None,
    own: DevRoutes | None = None,
) -> servers.Server:
    """The server of the mode asked for: threaded, gevent, or prefork with ``--workers``.
    (Each mode's module is imported here, so a process imports only its own.) A warm
    child ignores INT: CTRL-C on a terminal reaches it too, and its parent stops it."""
    actions = _signal_actions(settings, given)
    if parent is not None:
        actions[signal.SIGINT] = lambda: None
    common: dict[str, Any] = {
        "shutdown_grace": settings.shutdown_grace,
        "reload_grace": settings.reload_grace,
        "on_changes": on_changes,
        "signal_actions": actions,
        "max_body": settings.limit_request_body * limits.MIB,
        "own": own,
    }
    if not settings.workers:  # prefork's channel for live reload's streams: no workers now
        for end in handover.own_channel or ():
            end.close()
    if evented:
        from devserve._engine import gevent

        limits.set_memory_hard(settings.limit_memory_hard)
        return gevent.GeventServer(
            application,
            sock,
            connections=handover.connections,
            limits=limits.Limits.from_settings(settings, debugging=_debugger_attached()),
            parent=gevent.parent_pid(),
            **common,
        )
    if not settings.workers:
        for worker in handover.workers:  # --workers was dropped: not ours to keep
            os.kill(worker.pid, signal.SIGTERM)
            os.close(worker.heartbeat)
        limits.set_memory_hard(settings.limit_memory_hard)
        from devserve._engine import threaded

        return threaded.ThreadedServer(
            application,
            sock,
            max_threads=settings.max_http_threads,
            connections=handover.connections,
            limits=limits.Limits.from_settings(settings, debugging=_debugger_attached()),
            paused=paused,
            **common,
        )
    from devserve._engine import prefork

    now = time.monotonic()
    workers = [  # serving already: never taken for workers that fail to start
        prefork.Worker(w.pid, w.number, w.heartbeat, last_seen=now, ready=True)
        for w in handover.workers
    ]
    if broken and workers:
        _logger.error("the new code did not load: the workers of the previous code go on serving")
    companions: list[Companion] = [] if evented_child is None else [evented_child]
    if jobs := ([] if broken else _served_jobs(served, evented=False)):
        companions.append(_cron_workers(settings, jobs))
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
        companions=companions,
        on_imported=on_imported,
        adopter=parent.parent_pid if parent is not None else None,
        own_channel=handover.own_channel,
        **common,
    )


def _evented_child(
    settings: config.Settings,
    given: WSGIApplication | None,
    handed: reloader.HandedChildren | None,
    evented: bool,
) -> EventedChild | None:
    """Prefork's evented child (see :func:`evented_child.from_settings`); none in gevent
    mode, which is one."""
    from devserve._engine import evented_child

    return None if evented else evented_child.from_settings(settings, handed, given is not None)


def _evented_child_socket(evented: bool) -> socket.socket | None:
    if not evented:
        return None
    from devserve._engine import gevent

    return gevent.child_socket()


def _run_server(
    settings: config.Settings,
    given: WSGIApplication | None,
    handover: reloader.Handover,
    pidfile: servers.Pidfile,
    post_mortem: str | None,
    evented: bool,
    parent: warm.Channel | None = None,
) -> int:
    """Serve in this process until stopped or reloaded (``parent``: in a warm parent's
    serving child, which hands a reload back to it instead of exec'ing)."""
    limits.raise_open_files()  # every mode: as many connections as the system allows
    inherited = set(sys.modules)  # a warm child: what its parent imported already
    reloaded = handover.reload
    sock = handover.listener or _evented_child_socket(evented)
    sock = sock or servers.bind_socket(settings.http_interface, settings.http_port)
    if "werkzeug" in settings.dev:
        from devserve import debug  # here: only with a debugger (start-up is reload latency)

        debug.check_socket_safety(sock, settings.debugger_allow_remote)
    load_started = time.time()
    if given is None:
        served, broken_files = app.load_or_error(settings, first_start=not reloaded)
    else:
        served, broken_files = app.Served(app.wrap_app(given, settings), given), []
    integration, application = frameworks.prepare(
        settings, served.imported, served.app, bool(broken_files)
    )
    crons = _cron_runner(settings, served, evented) if not broken_files else None
    application, holder, debugger, live = _in_front(
        settings, application, served, integration, post_mortem, handover
    )
    watch = watching.ReloadWatch(
        settings,
        broken_files,
        since=watching.changes_since(load_started, reloaded),
        given=given,
        integration=integration,
        in_process=not settings.workers,  # prefork: the workers serve
        remembered=handover.watched,
        live=live,
    )
    report, own = _status(
        settings, given, live, handover, watch, served.failure, parent is not None
    )
    child = _evented_child(settings, given, handover.evented, evented)
    server = _make_server(
        settings,
        application,
        sock,
        handover,
        served=served,
        given=given,
        broken=bool(broken_files),
        paused=lambda: holder is not None and holder.holding > 0,
        evented=evented,
        evented_child=child,
        on_changes=watch.on_changes,
        on_imported=watch.learned if settings.reload else None,
        parent=parent,
        own=own,
    )
    server.changes_quiet_for = watch.quiet_for  # a reload waits for a checkout to end
    report.server = server
    report.mode = f"{server.description} (warm reload)" if parent else server.description
    is_evented_child = False
    if evented:
        from devserve._engine import gevent

        is_evented_child = gevent.parent_pid() is not None  # a prefork master's

    def announce() -> None:
        if reloaded:
            now = time.monotonic()
            took = (now - reloaded.first_seen) * 1000
            _logger.info("reloaded in %.0f ms (%s): %s", took, reloaded.kind, reloaded.summary(now))
            report.history = [*report.history, reloaded.record(now)]
        elif is_evented_child:
            _logger.info("evented child serving on %s (pid %d)", server.url, os.getpid())
        else:
            report.print_banner(settings, server.url, application)
        if parent is not None:
            from devserve._engine import warm

            warm.report_ready(parent, inherited, watch.roots, server.served_first)
        if not is_evented_child:  # its master watches, and reports what the framework says
            watch.start_in_background(server.notify, after=server.served_first)
            frameworks.report_started(integration, server.served_first, not settings.workers)
        if crons is not None:
            crons.start()

    try:
        outcome = server.run(on_ready=announce)
        watch.stop()  # before the server's wake-up pipe closes: nothing notifies after
        crons_done, outcome = _stop_crons(crons, settings, outcome)
        if outcome is servers.Outcome.RELOAD and server.reload is not None:
            handed = server.handover()
            if child is not None:  # retired by the master: it finishes on its own
                handed.evented = child.handover()
            handed.watched = watch.folders_to_remember()
            handed.debugger_failures = _failed_pins(debugger)
            handed.history = report.history
            if parent is not None:
                from devserve._engine import warm

                warm.hand_back(parent, handed, inherited, watch.roots())
            reloader.reexec(handed)
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


def _in_front(
    settings: config.Settings,
    application: WSGIApplication,
    served: app.Served,
    integration: frameworks.Integration,
    post_mortem: str | None,
    handover: reloader.Handover,
) -> tuple[WSGIApplication, Any, Any, livereload.Live | None]:
    """The app behind what development puts in front of it: the debuggers asked for (see
    :func:`debug.in_front`), then live reload, outermost, so the debugger's pages load it
    too. (Each imported only when asked: start-up is reload latency.)"""
    holder = debugger = live = None
    if post_mortem or "werkzeug" in settings.dev:
        from devserve import debug

        failures = handover.debugger_failures
        application, holder, debugger = debug.in_front(settings, application, post_mortem, failures)
    if settings.live_reload:
        from devserve import livereload

        # New code that failed to load, with prefork's previous workers serving on: the
        # code serving is theirs, and so is its id.
        kept = served.failure is not None and settings.workers and handover.workers
        live = livereload.setup(settings, served, integration, handover.image if kept else "")
        application = live.wrap(application) if live is not None else application
    return application, holder, debugger, live


def _status(
    settings: config.Settings,
    given: WSGIApplication | None,
    live: livereload.Live | None,
    handover: reloader.Handover,
    watch: watching.ReloadWatch,
    failure: BaseException | None,
    warm_child: bool,
) -> tuple[status.StatusReport, DevRoutes | None]:
    """This process's status, and devserve's own routes: live reload's (the status among
    them when it is served: any --dev, or --status), or the status' alone. Not from the
    evented child: its master is the server to ask and to signal."""
    from devserve._engine.devroutes import DevRoutes, new_image
    from devserve._engine.evented_child import PARENT_ENV

    image = live.image if live is not None else new_image()
    report = status.StatusReport.starting(
        settings, given, image, handover.history, watch, warm_child
    )
    report.previous_image = handover.image
    own = live.routes if live is not None else None
    if settings.serves_status and PARENT_ENV not in os.environ:
        if own is None:
            from devserve import livereload

            error = livereload.failure_event(failure) if failure is not None else None
            own = DevRoutes(report.image, error, events=False)
        own.status = report.snapshot
    report.routes = own
    return report, own


def _failed_pins(debugger: Any) -> int:
    """Werkzeug's debugger's wrong PINs so far (none without it), for the next image."""
    if debugger is None:
        return 0
    from devserve import debug

    return debug.failed_pins(debugger)


def _served_jobs(served: app.Served, evented: bool) -> list[Job]:
    """The @cron jobs of the addons served. None for a plain WSGI app, nor in gevent mode
    (as in Odoo: cron runs in threaded mode's threads or in prefork's cron workers)."""
    if evented or not served.addons:
        return []
    from devserve import cron  # here: a plain WSGI app never pays for it

    return cron.served_jobs(addon.name for addon in served.addons)


def _cron_workers(settings: config.Settings, jobs: list[Job]) -> Companion:
    """Prefork's cron workers: the jobs dealt into one slot per worker, each slot's worker
    running its share on one thread."""
    from devserve import cron
    from devserve._engine.cron_workers import CronWorkers

    limit = cron.time_limit(settings)
    parts = cron.partition(jobs, min(settings.max_cron_threads, len(jobs)))
    return CronWorkers(
        [functools.partial(cron.CronRunner, part, threads=1, time_limit=limit) for part in parts]
    )


def _cron_runner(settings: config.Settings, served: app.Served, evented: bool) -> CronRunner | None:
    """The threaded server's cron threads (prefork runs cron workers instead)."""
    jobs = _served_jobs(served, evented)
    if settings.workers or not jobs:
        return None
    from devserve import cron

    return cron.CronRunner(jobs, settings.max_cron_threads, cron.time_limit(settings))


def _stop_crons(
    crons: CronRunner | None, settings: config.Settings, outcome: servers.Outcome
) -> tuple[bool, servers.Outcome]:
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


def _signal_actions(
    settings: config.Settings, given: WSGIApplication | None
) -> dict[int, Callable[[], None]]:
    return servers.signal_actions(lambda: project.roots(settings, given))
