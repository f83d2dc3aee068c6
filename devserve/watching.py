"""``--dev reload``'s watch over a running app: what it watches, and what a change does.

The watches are set up once the server is up (a big tree never delays serving), in a
thread, and follow the app: a module imported later (on a first request) adds its folder,
and the folders learned are kept across reloads (the next image watches them from its
start). Batches of changes go to the server's control loop, which asks :meth:`ReloadWatch.
on_changes` whether to reload: static files never reload, templates a framework re-reads
in place do not either, anything else does once it compiles (:func:`reloader.prepare_reload`).
"""

from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from devserve import config, project, reloader
from devserve.frameworks import Integration
from devserve.reloader import FileChanges

if TYPE_CHECKING:
    from devserve.livereload import Live
    from devserve.servers import Event
    from devserve.watcher import PathFilter

__all__ = ["ReloadWatch"]

_logger = logging.getLogger(__name__)

WATCHER_DELAY = 0.25  # the watcher sets up after the first request, or after this long
IMPORTS_EVERY = 1.0  # seconds between two looks for modules imported since


def changes_since(load_started: float, reloaded: reloader.Reload | None) -> float:
    """From when (``time.time()``) the files changed count as changes this image must
    catch up on (made before its watches existed). At a first start: since its load began
    (the watcher allows 20 ms for the kernel's coarse file times). After a reload: since the
    previous image decided it, less 5 ms; the edit it reloaded for was written at least the
    settle time (10 ms) before that, so a fast (warm) reload does not see it again, and a
    file written after the previous image stopped watching is stamped later."""
    if reloaded is None:
        return load_started
    decided = time.time() - (time.monotonic() - reloaded.decided)
    return decided + 0.015  # the watcher takes 20 ms off


class ReloadWatch:
    """Watches the project of one process image for ``--dev reload``."""

    def __init__(
        self,
        settings: config.Settings,
        files: list[str],
        since: float,
        given: Any = None,
        integration: Integration | None = None,
        in_process: bool = True,
        remembered: list[str] | None = None,
        live: Live | None = None,
    ) -> None:
        self.settings = settings
        self.live = live  # live reload: what a change that needs no restart tells the browser
        self.files = files  # single files: those of a failed load's traceback
        self.since = since
        self.given = given  # an app object handed to devserve.run(), if any
        self.integration = integration or Integration(None, settings)
        self.in_process = in_process  # the app serves in this process (not prefork workers)
        self.watcher: Any = None
        self.stopped = threading.Event()
        self._lock = threading.Lock()  # between set-up (its own thread) and stop()
        self._modules = 0  # len(sys.modules) at the last look
        self.remembered = list(remembered or [])  # folders an earlier image watched
        self._learned: queue.SimpleQueue[str] = queue.SimpleQueue()  # from prefork workers
        self._static: list[str] | None = None
        self._filters: dict[bool, PathFilter] = {}

    # --- what is watched ---

    def roots(self) -> list[str]:
        """The folders to watch: the project's (what the app imported), the framework's
        template folders, those an earlier image learned, and ``--reload-path`` folders."""
        extra = [path for path in self.settings.reload_path if os.path.isdir(path)]
        static = self.integration.static_folders() if self.live is not None else []
        folders = [
            *project.roots(self.settings, self.given),
            *self.integration.watch_folders(),
            *static,
            *self.remembered,
            *extra,
        ]
        return project.collapse(folder for folder in folders if os.path.isdir(folder))

    def _files(self, roots: list[str]) -> list[str]:
        """Single files: a failed load's, ``--reload-path`` files, and the config files
        (``.env``, ``pyproject.toml``...) of the folders holding the project's packages and
        of the folder devserve started in."""
        packages = [root for root in roots if os.path.isfile(os.path.join(root, "__init__.py"))]
        named = [path for path in self.settings.reload_path if not os.path.isdir(path)]
        folders = [*(os.path.dirname(root) for root in packages), os.getcwd()]
        outside = [folder for folder in folders if not project.is_library(folder)]
        # An addons folder gone (or unreadable): watched from its parent, to come back.
        unreadable = [
            folder
            for folder in self.settings.addons_path
            if not os.access(folder, os.R_OK | os.X_OK)
        ]
        own = [self.settings.config] if self.settings.config else []  # devserve's settings
        files = [*self.files, *named, *unreadable, *own, *project.config_files(outside)]
        return list(dict.fromkeys(files))

    # --- lifecycle ---

    def start_in_background(self, notify: Callable[[Any], object], after: Event) -> None:
        """Set the watches up in a thread, once the first request was answered (after a
        reload, someone is waiting for it) or 250 ms have passed. Changes made meanwhile are
        caught up by modification time."""
        if not self.settings.reload:
            return
        thread = threading.Thread(
            target=self._run, args=(notify, after), name="devserve.watcher.setup", daemon=True
        )
        thread.start()

    def _run(self, notify: Callable[[Any], object], after: threading.Event) -> None:
        after.wait(WATCHER_DELAY)
        try:
            self._start(notify)
        except Exception:  # watching must never take the server down
            _logger.exception("watching for changes failed; reloads need a HUP now")
            return
        while not self.stopped.wait(IMPORTS_EVERY):
            try:
                self._follow_imports()
            except Exception:  # the watches set up go on
                _logger.exception("watching the folders of new imports failed")

    def _start(self, notify: Callable[[Any], object]) -> None:
        from devserve import watcher

        self._modules = len(sys.modules)
        roots = self.roots()
        with self._lock:
            if self.stopped.is_set():
                return
            self.watcher = watcher.Watcher(
                roots=roots,
                files=self._files(roots),
                on_batch=lambda paths, first: notify(FileChanges(paths, first)),
                path_filter=self._filter(live=self.live is not None),
                backend=self.settings.reload_backend,
                since=self.since,
            )
            took = self.watcher.start()
        gone = [folder for folder in self.settings.addons_path if not os.path.isdir(folder)]
        _logger.info(
            "watching %s%s with %s (ready in %.0f ms)",
            reloader.describe_paths(roots, limit=6) or ("" if gone else "nothing"),
            f"{' and ' if roots else ''}for {reloader.describe_paths(gone)} to come back"
            if gone
            else "",
            self.watcher.describe(),
            took * 1000,
        )

    def _filter(self, live: bool) -> PathFilter:
        """The files that count: code, templates, config; with live reload, the static
        files a page loads too (stylesheets, scripts, images)."""
        if live not in self._filters:
            from devserve import livereload, watcher

            include = (*project.DEFAULT_INCLUDE, *self.settings.reload_include)
            if live:
                include += livereload.STATIC_INCLUDE
            self._filters[live] = watcher.PathFilter(include, self.settings.reload_exclude)
        return self._filters[live]

    def _follow_imports(self) -> None:
        """Modules imported since the last look, here (a first request imports views...)
        or in a prefork worker: watch their folders too."""
        learned = self._drain_learned()
        if (len(sys.modules) == self._modules and not learned) or self.watcher is None:
            return
        self._modules = len(sys.modules)
        with self._lock:
            if self.stopped.is_set():
                return
            added = self.watcher.add_roots([*project.module_roots(), *learned])
        if added:
            _logger.info("watching %s too (imported since)", reloader.describe_paths(added))

    def _drain_learned(self) -> list[str]:
        learned = []
        while not self._learned.empty():
            learned.append(self._learned.get_nowait())
        return learned

    def learned(self, folders: list[str]) -> None:
        """Folders of modules another process imported (a prefork worker, on a request):
        watched within a second. Any thread (the control loop's) may call this."""
        for folder in folders:
            if os.path.isabs(folder) and not project.is_library(folder):
                self._learned.put(folder)

    def quiet_for(self) -> float:
        """Seconds since a watched file last changed (infinite before any, or unwatched)."""
        return self.watcher.quiet_for() if self.watcher is not None else float("inf")

    def folders_to_remember(self) -> list[str]:
        """Before an exec: the folders the next image watches from its start, before it
        imports them again (those this one watched and learned; the hand-over carries them)."""
        watched = self.watcher.roots if self.watcher is not None else []
        return list(dict.fromkeys([*self.remembered, *watched, *self._drain_learned()]))

    def stop(self) -> None:
        self.stopped.set()
        if self.watcher is not None:  # a set-up under way: ends early instead of being waited
            self.watcher.cancel()
        with self._lock:
            if self.watcher is not None:
                self.watcher.stop()

    # --- what a change does ---

    def on_changes(self, changes: FileChanges) -> frozenset[str]:
        """The files of a batch of changes that reload (the control loop asks; none: no
        reload): not static files, nor templates the framework re-reads itself, and none
        while a changed Python file has a syntax error."""
        try:
            static, refreshed = self._not_reloading(changes.paths)
        except Exception:  # the framework's code failed: a reload reads everything again
            _logger.exception("asking %s about %s failed", self.integration.name, changes.paths)
            static, refreshed = set(), set()
        if static:
            _logger.debug("%s: static, served as it is", reloader.describe_paths(static))
        if refreshed:
            _logger.info(
                "%s: re-read by %s, no reload needed",
                reloader.describe_paths(refreshed),
                self.integration.name,
            )
        restart = changes.paths - static - refreshed
        if self.live is not None:  # a script or an image outside a static folder: nothing
            restart = frozenset(path for path in restart if not self._live_only(path))
        problems = reloader.prepare_reload(FileChanges(restart, changes.first_seen))
        if restart and not problems:
            return restart
        if self.live is not None:
            self.live.changed(static, refreshed)
            self.live.refused(problems)
        return frozenset()

    def _live_only(self, path: str) -> bool:
        """A file watched only for live reload (a stylesheet, a script, an image) that is
        not under a static folder: it changes nothing."""
        from devserve import livereload

        if not livereload.is_static_name(os.path.basename(path)):
            return False
        roots = self.watcher.roots if self.watcher is not None else []
        root = max((r for r in roots if project.inside(path, r)), key=len, default="")
        return not self._filter(live=False).matches(path, root)

    def _not_reloading(self, paths: frozenset[str]) -> tuple[set[str], set[str]]:
        """The static files among ``paths``, and the files the framework re-read itself."""
        if self._static is None:
            self._static = self.integration.static_folders()
        roots = self.watcher.roots if self.watcher is not None else []
        static = {path for path in paths if project.is_static(path, roots, self._static)}
        rest = paths - static
        return static, self.integration.refresh(rest, self.in_process) if rest else set()
