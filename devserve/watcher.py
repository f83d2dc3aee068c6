"""Watching the code for changes.

The facade over three backends that share one contract (:class:`Backend`, in
:mod:`devserve._engine.backends`): inotify (the ``inotify`` package), watchdog, and stat
polling for filesystems that deliver no events. ``auto`` picks
inotify, else watchdog, else polling, and polls any root that sits on a network or virtual
filesystem (NFS, SMB, 9p/WSL, VirtualBox shares, FUSE). A subtree that inotify cannot watch
(the ``max_user_watches`` limit) is polled instead, with a warning that says how to raise
the limit: nothing is silently unwatched.

Backends report raw paths; :class:`PathFilter` decides which matter and the
:class:`Debouncer` turns a burst of them into one batch once writes have settled.
"""

from __future__ import annotations

import fnmatch
import functools
import logging
import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from devserve._engine.backends import (
    BACKENDS,
    Backend,
    Emit,
    PollingBackend,
    available,
    backend_names,
    needs_polling,
    scan,
)

__all__ = [
    "BACKENDS",
    "DEFAULT_IGNORED_DIRS",
    "DEFAULT_IGNORED_FILES",
    "Backend",
    "Debouncer",
    "PathFilter",
    "Watcher",
    "backend_names",
]

_logger = logging.getLogger(__name__)

DEFAULT_IGNORED_DIRS = frozenset(
    {
        "__pycache__",
        ".git",
        ".hg",
        ".svn",
        ".bzr",
        ".venv",
        "venv",
        ".tox",
        ".nox",
        "node_modules",
        ".mypy_cache",
        ".pytest_cache",
        ".ruff_cache",
        ".hypothesis",
        ".idea",
        ".eggs",
    }
)
DEFAULT_IGNORED_FILES = (
    ".~*",  # LibreOffice/Odoo lock files
    "*~",  # backups
    ".#*",  # emacs locks
    "*.swp",  # vim swap files
    "*.swx",
    "*.swo",
    "4913",  # vim's write test
    "*___jb_*___",  # JetBrains safe-write temp files (x.py___jb_tmp___, x.py___jb_old___)
    "*-journal",  # SQLite
    "*-wal",
    "*-shm",
    "*.log",
    "*.pyc",
    "*.pyo",
)
# Folders with no code that apps write to or tools generate into (uploads, collectstatic's
# output, coverage reports, build trees): never watched, unless they are a Python package.
DATA_DIRS = frozenset({"media", "uploads", "staticfiles", "htmlcov", "build", "dist"})
# A batch is complete after this long without a new change: the writes of one editor save
# or one git checkout come microseconds apart, and every millisecond here is reload latency.
SETTLE_QUIET = 0.01
# A batch this big is a bulk write (a checkout, a formatter over the tree) under way: it
# settles only after a longer pause, so a writer the machine stalls for a moment is still
# one reload (a warm reload is fast enough to start before the rest is written).
BULK_BATCH = 10
BULK_QUIET = 0.05
SETTLE_MAX = 2.0  # ...or this long after its first change, for a writer that never pauses


# --- what matters ---


def _any_glob(patterns: Iterable[str]) -> re.Pattern[str]:
    """One expression matching what any of the globs matches (none: matches nothing)."""
    translated = [fnmatch.translate(pattern) for pattern in patterns]
    return re.compile("|".join(translated) if translated else "(?!)")


def _relative(path: str, root: str) -> str:
    if not root:
        return path
    if path.startswith(root) and path[len(root) : len(root) + 1] == os.sep:
        return path[len(root) + 1 :]  # the usual case, without os.path.relpath's cost
    return os.path.relpath(path, root)


@dataclass(frozen=True)
class PathFilter:
    """Which paths matter. A glob without ``/`` matches a file or folder name anywhere; one
    with ``/`` matches the path relative to the watched root (an include glob also the path
    from the root's own name: ``templates/*`` matches every file of a watched ``templates``
    folder)."""

    include: tuple[str, ...] = ("*.py",)
    exclude: tuple[str, ...] = ()

    # Each list of globs is compiled into one regular expression, once: the filter runs for
    # every file of the tree at start-up (20,000 files: ~0.2 s saved per start).
    @functools.cached_property
    def _ignored_name(self) -> re.Pattern[str]:
        return _any_glob(DEFAULT_IGNORED_FILES)

    @functools.cached_property
    def _included_name(self) -> re.Pattern[str]:
        return _any_glob(pattern for pattern in self.include if "/" not in pattern)

    @functools.cached_property
    def _included_path(self) -> re.Pattern[str]:
        return _any_glob(pattern for pattern in self.include if "/" in pattern)

    def includes_name(self, name: str) -> bool:
        """Whether a file of this name counts wherever it is (an include glob without /)."""
        return bool(self._included_name.match(name))

    @functools.cached_property
    def _includes_paths(self) -> bool:
        return any("/" in pattern for pattern in self.include)

    def _included(self, name: str, relative: str, root: str) -> bool:
        if self.includes_name(name):
            return True
        if not self._includes_paths:
            return False
        from_root = os.path.join(os.path.basename(root), relative) if root else relative
        return bool(self._included_path.match(relative) or self._included_path.match(from_root))

    @functools.cached_property
    def _excluded_name(self) -> re.Pattern[str]:
        return _any_glob(pattern for pattern in self.exclude if "/" not in pattern)

    @functools.cached_property
    def _excluded_path(self) -> re.Pattern[str]:
        return _any_glob(pattern for pattern in self.exclude if "/" in pattern)

    def _excluded(self, relative: str) -> bool:
        if not self.exclude:
            return False
        if self._excluded_path.match(relative):
            return True
        return any(self._excluded_name.match(part) for part in relative.split(os.sep))

    def watches_dir(self, path: str, root: str = "") -> bool:
        name = os.path.basename(path)
        if name in DEFAULT_IGNORED_DIRS or os.path.exists(os.path.join(path, "pyvenv.cfg")):
            return False
        if name in DATA_DIRS and not os.path.exists(os.path.join(path, "__init__.py")):
            return False
        return not self._excluded(_relative(path, root))

    def matches(self, path: str, root: str = "") -> bool:
        name = os.path.basename(path)
        if self._ignored_name.match(name):
            return False
        relative = _relative(path, root)
        if not self._included(name, relative, root):
            return False
        if any(part in DEFAULT_IGNORED_DIRS for part in relative.split(os.sep)[:-1]):
            return False
        return not self._excluded(relative)

    def __repr__(self) -> str:
        return f"PathFilter(include={list(self.include)}, exclude={list(self.exclude)})"


# --- batching ---


class Debouncer:
    """Collects reported paths and hands them on as one batch once no new path has arrived
    for ``quiet`` seconds (at most ``max_wait`` after the first), so a ``git checkout`` of
    500 files is one batch and a half-written tree is never reported.

    Each path is stamped with ``clock()`` when it is reported; the thread waits exactly
    until the batch is due. :meth:`pump` is one turn of that thread without the wait, so a
    test can replay scripted events on a fake clock."""

    def __init__(
        self,
        on_batch: Callable[[frozenset[str], float], object],
        quiet: float = SETTLE_QUIET,
        max_wait: float = SETTLE_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.on_batch = on_batch
        self.quiet = quiet
        self.max_wait = max_wait
        self.clock = clock
        self._paths: queue.SimpleQueue[tuple[str, float] | None] = queue.SimpleQueue()
        self.last_put = 0.0  # clock() of the last path reported
        self._batch: set[str] = set()
        self._first = self._last = 0.0  # when the batch's first and last paths came
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="devserve.watcher", daemon=True)
        self._thread.kind = "watcher"  # type: ignore[attr-defined]

    def start(self) -> None:
        self._thread.start()

    def put(self, path: str) -> None:
        self.last_put = now = self.clock()
        self._paths.put((path, now))

    def stop(self, timeout: float = 1.0) -> None:
        """No batch is handed on once this returns (within ``timeout``)."""
        self._paths.put(None)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def due_in(self, now: float) -> float | None:
        """Seconds until the batch is due (0: now); None without one."""
        if not self._batch:
            return None
        quiet = max(self.quiet, BULK_QUIET) if len(self._batch) >= BULK_BATCH else self.quiet
        return max(0.0, min(self._last + quiet, self._first + self.max_wait) - now)

    def pump(self) -> bool:
        """Take every path reported so far, and hand the batch on if it is due. False once
        stopped."""
        while not self._stopped:
            try:
                item = self._paths.get_nowait()
            except queue.Empty:
                break
            if item is None:
                self._stopped = True  # the batch under way is dropped, never handed on late
                self._batch.clear()
            else:
                self._add(*item)
        if self._stopped:
            return False
        if self.due_in(self.clock()) == 0:
            batch, first_seen = frozenset(self._batch), self._first
            self._batch.clear()
            self.on_batch(batch, first_seen)
        return True

    def _add(self, path: str, at: float) -> None:
        if not self._batch:
            self._first = at
        self._batch.add(path)
        self._last = at

    def _run(self) -> None:
        while True:
            try:  # no batch: blocks, no wake-ups while nothing changes
                item = self._paths.get(timeout=self.due_in(self.clock()))
            except queue.Empty:
                pass
            else:
                if item is None:
                    self._stopped = True
                    return
                self._add(*item)
            if not self.pump():
                return


# --- the watcher ---


@dataclass
class Watcher:
    """Watches ``roots`` recursively and ``files`` one by one; calls ``on_batch(paths,
    first_seen)`` from a background thread once a burst of changes has settled."""

    roots: list[str]
    on_batch: Callable[[frozenset[str], float], object]
    files: list[str] = field(default_factory=list)
    path_filter: PathFilter = field(default_factory=PathFilter)
    backend: str = "auto"
    quiet: float = SETTLE_QUIET
    since: float | None = None  # also report files modified after this time.time()
    backends: list[Backend] = field(default_factory=list, init=False)
    _poller: PollingBackend | None = field(default=None, init=False)
    _events: Backend | None = field(default=None, init=False)
    _adding_roots: threading.local = field(default_factory=threading.local, init=False)
    _started: bool = field(default=False, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _cancelled: threading.Event = field(default_factory=threading.Event, init=False)

    def start(self) -> float:
        """Set up every watch; returns how long that took (seconds)."""
        started = time.monotonic()
        debouncer = Debouncer(self._settled, self.quiet)
        self._debouncer = debouncer
        self.files = [*self.files, *(root for root in self.roots if os.path.isfile(root))]
        self.roots = [root for root in self.roots if os.path.isdir(root)]
        event_roots, polled_roots = self._split_roots(self.roots)
        if event_roots or self.files:
            self._start_event_backend(event_roots)
        for root in polled_roots:
            self._poll_instead(root, root)
        self._started = True
        debouncer.start()
        if self.since is not None:
            self._report_modified_since(self.since, debouncer.put)
        return time.monotonic() - started

    def _settled(self, paths: frozenset[str], first_seen: float) -> None:
        """A batch, without the temporary file of an atomic save (an editor, ``sed -i``):
        written and renamed over the file it replaces, it is gone beside a file of the
        batch that is still there, and its name is none that counts by itself (a deleted
        ``views.py`` or ``page.html`` stays, whatever else changed)."""
        present = {path for path in paths if os.path.lexists(path)}
        folders = {os.path.dirname(path) for path in present}

        def temporary(path: str) -> bool:
            name = os.path.basename(path)
            return os.path.dirname(path) in folders and not self.path_filter.includes_name(name)

        self.on_batch(frozenset(p for p in paths if p in present or not temporary(p)), first_seen)

    def _start_event_backend(self, roots: list[str]) -> None:
        backend = self._make_event_backend(self._debouncer.put)
        backend.cancelled = self._cancelled
        backend.poll_instead = self._poll_instead
        backend.start(roots, self.files)
        self.backends.insert(0, backend)
        self._events = backend

    def add_roots(self, roots: Iterable[str]) -> list[str]:
        """Watch more folders, once started (the folders of modules imported since); the
        files changed in them since ``since`` are reported. Returns the folders newly
        watched: not those inside a folder watched already."""
        added = []
        self._adding_roots.active = True  # folders polled meanwhile: their files are not new
        try:
            for root in roots:
                if self._add_root(root):
                    added.append(root)
        finally:
            self._adding_roots.active = False
        return added

    def _add_root(self, root: str) -> bool:
        if not os.path.isdir(root) or any(
            root == other or root.startswith(other + os.sep) for other in self.roots
        ):
            return False
        self.roots.append(root)
        _event_roots, polled_roots = self._split_roots([root])
        if polled_roots:
            self._poller_for().add(root, root)
        elif self._events is None:
            self._start_event_backend([root])
        else:
            self._events.add_root(root)
        if self.since is not None:
            self._report_modified_since(self.since, self._debouncer.put, [root])
        return True

    def _poller_for(self) -> PollingBackend:
        with self._lock:
            if self._poller is None:
                self._poller = PollingBackend(self.path_filter, self._debouncer.put)
                self._poller.cancelled = self._cancelled
                self._poller.start([])
                self.backends.append(self._poller)
            return self._poller

    def _poll_instead(self, folder: str, root: str) -> None:
        """Poll a folder no event backend watches: a slow filesystem, or one inotify ran out
        of watches for (at start, or when it appeared later: then its files are new; not
        when it is part of a root added later)."""
        appeared = self._started and not getattr(self._adding_roots, "active", False)
        self._poller_for().add(folder, root, report_existing=appeared)

    def _make_event_backend(self, emit: Emit) -> Backend:
        name = self._event_backend()
        try:
            return BACKENDS[name](self.path_filter, emit)
        except OSError as error:  # e.g. inotify's max_user_instances reached
            _logger.warning("cannot use %s (%s): polling instead", name, error)
            return PollingBackend(self.path_filter, emit)

    def _report_modified_since(
        self, since: float, emit: Emit, roots: list[str] | None = None
    ) -> None:
        """Changes made while this process was starting, before its watches existed: the
        previous image stopped listening when it decided to reload (``roots``: only in
        those, watched later). The margin covers the coarse clock the kernel stamps files
        with."""
        threshold = int((since - 0.02) * 1e9)
        files = self.files if roots is None else []
        pairs = ((root, root) for root in (self.roots if roots is None else roots))
        found = scan(pairs, files, self.path_filter, self._cancelled)
        for path, (mtime_ns, _size, _inode) in found.items():
            if mtime_ns > threshold:
                emit(path)

    def _event_backend(self) -> str:
        if self.backend != "auto":
            return self.backend
        return next(name for name in ("inotify", "watchdog", "poll") if available(name))

    def _split_roots(self, roots: list[str]) -> tuple[list[str], list[str]]:
        """The roots an event backend watches, and those polled."""
        if self.backend == "poll":
            return [], list(roots)
        if self.backend != "auto":
            return list(roots), []
        import psutil

        partitions = psutil.disk_partitions(all=True)  # the mount table, read once
        polled = [root for root in roots if needs_polling(root, partitions)]
        return [root for root in roots if root not in polled], polled

    def describe(self) -> str:
        return " + ".join(backend.name for backend in self.backends) or "nothing"

    def status(self) -> dict[str, Any]:
        """For the status: the roots, the backends, how many folders they watch (inotify:
        each folder; the others: each tree), and the subtrees polled."""
        watched = [folder for backend in list(self.backends) for folder in backend.folders()]
        polled = self._poller.folders() if self._poller is not None else []
        return {
            "roots": list(self.roots),
            "backend": self.describe(),
            "folders": len(watched),
            "polled": polled,
        }

    def quiet_for(self) -> float:
        """Seconds since a watched file last changed (infinite before any change)."""
        debouncer: Debouncer | None = getattr(self, "_debouncer", None)
        if debouncer is None or not debouncer.last_put:
            return float("inf")
        return time.monotonic() - debouncer.last_put

    def cancel(self) -> None:
        """Make a start() under way (in another thread) end early: a stop is coming."""
        self._cancelled.set()

    def stop(self) -> None:
        self._cancelled.set()
        for backend in self.backends:
            backend.stop()
        if hasattr(self, "_debouncer"):
            self._debouncer.stop()
