"""Watching the code for changes.

Three backends behind one small interface (:class:`Backend`): inotify (the ``inotify``
package), watchdog, and stat polling for filesystems that deliver no events. ``auto`` picks
inotify, else watchdog, else polling, and polls any root that sits on a network or virtual
filesystem (NFS, SMB, 9p/WSL, VirtualBox shares, FUSE). A subtree that inotify cannot watch
(the ``max_user_watches`` limit) is polled instead, with a warning that says how to raise
the limit: nothing is silently unwatched.

Backends report raw paths; :class:`PathFilter` decides which matter and the
:class:`Debouncer` turns a burst of them into one batch once writes have settled.
"""

from __future__ import annotations

import abc
import contextlib
import errno
import fnmatch
import functools
import logging
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

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
# Filesystems that deliver no (or unreliable) inotify events for changes made elsewhere.
POLLED_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smbfs", "smb3", "9p", "drvfs", "vboxsf", "vmhgfs", "fuse.sshfs"}
)
# A batch is complete after this long without a new change: the writes of one editor save
# or one git checkout come microseconds apart, and every millisecond here is reload latency.
SETTLE_QUIET = 0.01
SETTLE_MAX = 2.0  # ...or this long after its first change, for a writer that never pauses

Emit = Callable[[str], None]
Snapshot = dict[str, tuple[int, int, int]]  # path -> (mtime_ns, size, inode)


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


def walk(
    start: str,
    path_filter: PathFilter,
    enter: Callable[[str], bool] | None = None,
    root: str | None = None,
    cancelled: threading.Event | None = None,
) -> Iterator[tuple[str, list[os.DirEntry[str]]]]:
    """Every watched folder under ``start`` with its entries, following symlinks (each real
    folder once, so a symlink loop ends). Globs with ``/`` match from ``root`` (default:
    ``start``). ``enter(folder)`` runs before the folder is listed; when it returns False
    the folder and everything below it are skipped. Ends early once ``cancelled`` is set."""
    root = root or start
    seen: set[str] = set()
    stack = [start]
    while stack and not (cancelled is not None and cancelled.is_set()):
        folder = stack.pop()
        real = os.path.realpath(folder)
        if real in seen:
            continue
        seen.add(real)
        if enter is not None and not enter(folder):
            continue
        try:
            with os.scandir(folder) as entries:
                listed = list(entries)
        except OSError:
            continue  # vanished or unreadable
        yield folder, listed
        for entry in listed:
            with contextlib.suppress(OSError):
                if entry.is_dir() and path_filter.watches_dir(entry.path, root):
                    stack.append(entry.path)


def scan(
    roots: Iterable[tuple[str, str]],
    files: Iterable[str],
    path_filter: PathFilter,
    cancelled: threading.Event | None = None,
) -> Snapshot:
    """The watched files under each (folder, its root), and the single ``files``, with
    what tells a change: modification time, size and inode (an atomic save changes it)."""
    found: Snapshot = {}
    for folder, root in roots:
        for _folder, entries in walk(folder, path_filter, root=root, cancelled=cancelled):
            for entry in entries:
                with contextlib.suppress(OSError):
                    if entry.is_file() and path_filter.matches(entry.path, root):
                        stat = entry.stat()
                        found[entry.path] = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    for path in files:
        with contextlib.suppress(OSError):
            stat = os.stat(path)
            found[path] = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
    return found


# --- batching ---


class Debouncer:
    """Collects reported paths and hands them on as one batch once no new path has arrived
    for ``quiet`` seconds (at most ``max_wait`` after the first), so a ``git checkout`` of
    500 files is one batch and a half-written tree is never reported."""

    def __init__(
        self,
        on_batch: Callable[[frozenset[str], float], object],
        quiet: float = SETTLE_QUIET,
        max_wait: float = SETTLE_MAX,
    ) -> None:
        self.on_batch = on_batch
        self.quiet = quiet
        self.max_wait = max_wait
        self._paths: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self.last_put = 0.0  # time.monotonic() of the last path reported
        self._thread = threading.Thread(target=self._run, name="devserve.watcher", daemon=True)
        self._thread.kind = "watcher"  # type: ignore[attr-defined]

    def start(self) -> None:
        self._thread.start()

    def put(self, path: str) -> None:
        self.last_put = time.monotonic()
        self._paths.put(path)

    def stop(self, timeout: float = 1.0) -> None:
        """No batch is handed on once this returns (within ``timeout``)."""
        self._paths.put(None)
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._paths.get()  # blocks: no wake-ups while nothing changes
            if first is None:
                return
            first_seen = time.monotonic()
            batch = {first}
            while time.monotonic() - first_seen < self.max_wait:
                try:
                    path = self._paths.get(timeout=self.quiet)
                except queue.Empty:
                    break
                if path is None:
                    return
                batch.add(path)
            self.on_batch(frozenset(batch), first_seen)


# --- backends ---


class Backend(abc.ABC):
    """Watches folders recursively (and single files) and reports changed paths."""

    name: str

    def __init__(self, path_filter: PathFilter, emit: Emit) -> None:
        self.path_filter = path_filter
        self.emit = emit
        self.unwatchable: list[str] = []  # folders this backend could not watch
        self.cancelled = threading.Event()  # set: a set-up under way ends early
        # Called with (folder, its root) for each of them, at start or later: poll it.
        self.poll_instead: Callable[[str, str], None] | None = None

    def cannot_watch(self, folder: str, root: str) -> None:
        self.unwatchable.append(folder)
        if self.poll_instead is not None:
            self.poll_instead(folder, root)

    @abc.abstractmethod
    def start(self, roots: list[str], files: Iterable[str] = ()) -> None:
        """Set up the watches (synchronously) and start reporting."""

    @abc.abstractmethod
    def add_root(self, root: str) -> None:
        """Watch one more folder recursively, while running."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop reporting and release the watches."""

    def report(self, path: str, root: str, files: frozenset[str] = frozenset()) -> None:
        if path in files or self.path_filter.matches(path, root):
            self.emit(path)


class PollingBackend(Backend):
    """Compares ``stat`` results every ``interval`` seconds: for filesystems without events,
    and for folders another backend could not watch (added while running)."""

    name = "poll"

    def __init__(self, path_filter: PathFilter, emit: Emit, interval: float = 1.0) -> None:
        super().__init__(path_filter, emit)
        self.interval = interval
        self._stopped = threading.Event()
        self._lock = threading.Lock()  # roots may be added while the poll thread runs
        self._roots: list[tuple[str, str]] = []  # (folder, the root its paths are under)
        self._files: frozenset[str] = frozenset()
        self._snapshot: dict[str, tuple[int, int, int]] = {}

    def _scan(self, roots: Iterable[tuple[str, str]], files: Iterable[str] = ()) -> Snapshot:
        return scan(roots, files, self.path_filter, self.cancelled)

    def start(self, roots: list[str], files: Iterable[str] = ()) -> None:
        with self._lock:
            self._roots = [(root, root) for root in roots]
            self._files = frozenset(files)
            self._snapshot = self._scan(self._roots, self._files)
        thread = threading.Thread(target=self._run, name="devserve.watcher.poll", daemon=True)
        thread.kind = "watcher"  # type: ignore[attr-defined]
        thread.start()

    def add(self, folder: str, root: str, report_existing: bool = False) -> None:
        """Poll one more folder. ``report_existing``: its files are new (the folder appeared
        while running), so report them now."""
        found = self._scan([(folder, root)])
        with self._lock:
            self._roots.append((folder, root))
            self._snapshot.update(found)
        if report_existing:
            for path in found:
                self.emit(path)

    def add_root(self, root: str) -> None:
        self.add(root, root)

    def _run(self) -> None:
        while not self._stopped.wait(self.interval):
            with self._lock:
                current = self._scan(self._roots, self._files)
                for path in current.keys() | self._snapshot.keys():
                    if current.get(path) != self._snapshot.get(path):
                        self.emit(path)
                self._snapshot = current

    def stop(self) -> None:
        self._stopped.set()


class InotifyBackend(Backend):
    """Linux inotify through the ``inotify`` package: one watch per watched folder, added
    as folders appear; ignored folders (``.git``, virtualenvs...) take no watch at all."""

    name = "inotify"

    def __init__(self, path_filter: PathFilter, emit: Emit) -> None:
        super().__init__(path_filter, emit)
        import inotify.adapters
        import inotify.constants as flags

        self._flags = flags
        # A file counts once its write is complete (closed, or renamed into place): a
        # truncating open is never a change on its own. Creations matter for folders (to
        # watch them) and symlinks (which are never written).
        self._mask = (
            flags.IN_CLOSE_WRITE
            | flags.IN_CREATE
            | flags.IN_DELETE
            | flags.IN_MOVED_FROM
            | flags.IN_MOVED_TO
            | flags.IN_ATTRIB  # a single watched path made readable again (chmod)
        )
        self._inotify = (
            _evented_inotify() if _evented() else inotify.adapters.Inotify(block_duration_s=1)
        )
        self._roots_of: dict[str, str] = {}  # watched folder -> the root it belongs to
        self._files: frozenset[str] = frozenset()
        self._stopped = threading.Event()
        self._warned = False
        self._adding = threading.Lock()  # folders appear in the event thread, roots elsewhere

    def _add_tree(self, folder: str, root: str, report_files: bool = False) -> None:
        # Each folder is watched before it is listed: a file or folder created in between
        # is then either listed or reported by the watch, never missed.
        watch = functools.partial(self._watch, root=root)
        with self._adding:
            for _path, entries in walk(folder, self.path_filter, watch, root, self.cancelled):
                if report_files:  # files created before the watch existed
                    for entry in entries:
                        self.report(entry.path, root)

    def add_root(self, root: str) -> None:
        self._add_tree(root, root)

    def _watch(self, path: str, root: str) -> bool:
        import inotify.calls

        if any(path.startswith(gone + os.sep) for gone in self.unwatchable):
            return False  # inside a subtree that is polled already
        if path in self._roots_of:  # watched already (under another root, or for its files)
            self._roots_of[path] = self._roots_of[path] or root
            return True
        try:
            self._inotify.add_watch(path, self._mask)
        except inotify.calls.InotifyError as error:
            if error.errno == errno.ENOSPC:
                self._out_of_watches(path, root)
                return False
            if error.errno in (errno.ENOENT, errno.EACCES, errno.ENOTDIR):
                return False
            raise
        self._roots_of[path] = root
        return True

    def _forget_tree(self, folder: str) -> None:
        """A watched folder was deleted or moved away: drop its watches and those below it,
        or the adapter (which still knows the path) would refuse to watch a new folder
        created at that path."""
        import inotify.calls

        with self._adding:  # roots may be added meanwhile (another thread)
            below = [p for p in self._roots_of if p == folder or p.startswith(folder + os.sep)]
            for path in below:
                del self._roots_of[path]
                with contextlib.suppress(inotify.calls.InotifyError):  # gone with its folder
                    self._inotify.remove_watch(path)

    def _out_of_watches(self, path: str, root: str) -> None:
        self.cannot_watch(path, root)
        if not self._warned:
            self._warned = True
            _logger.warning(
                "inotify ran out of watches at %s: that folder is polled instead (slower). "
                "Raise the limit with: sudo sysctl fs.inotify.max_user_watches=524288",
                path,
            )

    def start(self, roots: list[str], files: Iterable[str] = ()) -> None:
        self._files = frozenset(files)
        for root in roots:
            self._add_tree(root, root)
        for path in self._files:  # single files: watch their folder, report only them
            folder = os.path.dirname(path)
            if folder not in self._roots_of:
                with contextlib.suppress(Exception):
                    self._inotify.add_watch(folder, self._mask)
                    self._roots_of[folder] = ""
        thread = threading.Thread(target=self._run, name="devserve.watcher.inotify", daemon=True)
        thread.kind = "watcher"  # type: ignore[attr-defined]
        thread.start()

    def _run(self) -> None:
        try:
            self._read_events()
        except Exception:  # said, never silent: nothing is watched by inotify any more
            _logger.exception("inotify stopped reporting changes; a HUP reloads by hand")
        finally:
            self._inotify = None  # the last reference: its descriptor and watches go

    def _read_events(self) -> None:
        flags = self._flags
        # No terminal events: an unmounted folder must not end the watching of the others.
        # (The package drops the kernel's queue-overflow event: 16384 events pending unread,
        # far beyond what a checkout produces while this thread keeps reading.)
        for event in self._inotify.event_gen(yield_nones=True, terminal_events=()):
            if self._stopped.is_set():
                return
            if event is None:
                continue
            header, _names, folder, name = event
            path = os.path.join(folder, name)
            root = self._roots_of.get(folder)
            if root is None:
                continue
            if path in self._files and not header.mask & flags.IN_CLOSE_WRITE:
                self.emit(path)  # a single watched path appeared, went or changed mode
                continue
            if header.mask & flags.IN_ATTRIB:
                continue  # a mode or a time set on a file of the tree: no change of code
            if header.mask & flags.IN_ISDIR:
                appeared = header.mask & (flags.IN_CREATE | flags.IN_MOVED_TO)
                if appeared and root and self.path_filter.watches_dir(path, root):
                    self._add_tree(path, root, report_files=True)
                elif header.mask & (flags.IN_DELETE | flags.IN_MOVED_FROM):
                    self._forget_tree(path)
                continue
            if header.mask & flags.IN_CREATE and not os.path.islink(path):
                continue  # its IN_CLOSE_WRITE follows once written
            if root or path in self._files:
                self.report(path, root, self._files)

    def stop(self) -> None:
        self._stopped.set()


def _evented() -> bool:
    """Under gevent's monkey-patching (``devserve gevent``): every "thread" is a greenlet, so
    a wait must go through gevent's hub or it stalls them all."""
    monkey = sys.modules.get("gevent.monkey")
    return monkey is not None and bool(monkey.is_module_patched("select"))


def _evented_inotify() -> Any:
    """The ``inotify`` package's adapter for gevent mode. gevent removes ``select.epoll``,
    which the adapter needs: it gets the real one, and it never blocks in it: each of its
    waits first goes through gevent's ``select`` until the epoll descriptor is readable."""
    import select
    import types

    import inotify.adapters
    from gevent import monkey
    from gevent import select as gevent_select

    made: list[Any] = []

    def epoll() -> Any:
        made.append(monkey.get_original("select", "epoll")())
        return made[-1]

    def wait() -> float:
        gevent_select.select([made[0].fileno()], [], [], 1.0)
        return 0  # events are in (or a second passed): the adapter's own poll returns at once

    patched = inotify.adapters.select
    inotify.adapters.select = types.SimpleNamespace(epoll=epoll, POLLIN=select.POLLIN)
    try:
        return inotify.adapters.Inotify(block_duration_s=wait)
    finally:
        inotify.adapters.select = patched


class WatchdogBackend(Backend):
    """The watchdog package (where inotify is missing: macOS, Windows, BSD)."""

    name = "watchdog"

    def __init__(self, path_filter: PathFilter, emit: Emit) -> None:
        super().__init__(path_filter, emit)
        from watchdog.observers import Observer

        self._observer = Observer()
        self._files: frozenset[str] = frozenset()

    def start(self, roots: list[str], files: Iterable[str] = ()) -> None:
        self._files = frozenset(files)
        for root in roots:
            self.add_root(root)
        for folder in {os.path.dirname(path) for path in self._files}:
            with contextlib.suppress(OSError):
                self._observer.schedule(self._handler(""), folder, recursive=False)
        self._observer.daemon = True
        self._observer.start()

    def add_root(self, root: str) -> None:
        try:
            self._observer.schedule(self._handler(root), root, recursive=True)
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
            self.cannot_watch(root, root)

    def _handler(self, root: str) -> Any:
        """watchdog's handler for the events under ``root`` ("": the single files)."""
        from watchdog.events import FileSystemEvent, FileSystemEventHandler

        backend = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                if event.event_type in ("opened", "closed_no_write"):
                    return
                if event.is_directory and os.fsdecode(event.src_path) not in backend._files:
                    return  # a folder, unless a single watched path (an addons folder)
                for raw in (event.src_path, getattr(event, "dest_path", "")):
                    path = os.fsdecode(raw)
                    if path in backend._files or (
                        path and root and backend._in_watched_folder(path, root)
                    ):
                        backend.report(path, root, backend._files)

        return Handler()

    def _in_watched_folder(self, path: str, root: str) -> bool:
        """watchdog watches every folder under a root: drop the events from those the
        other backends leave out (a virtualenv is known by its pyvenv.cfg, not its name)."""
        folder = os.path.dirname(path)
        while folder.startswith(root + os.sep):
            if not self.path_filter.watches_dir(folder, root):
                return False
            folder = os.path.dirname(folder)
        return True

    def stop(self) -> None:
        self._observer.stop()


BACKENDS: dict[str, type[Backend]] = {
    "inotify": InotifyBackend,
    "watchdog": WatchdogBackend,
    "poll": PollingBackend,
}


def backend_names() -> tuple[str, ...]:
    return ("auto", *BACKENDS)


def available(name: str) -> bool:
    if name == "watchdog" and _evented():
        return False  # its observer's queue does not work with gevent's patched one
    module = {"inotify": "inotify.adapters", "watchdog": "watchdog.observers"}.get(name)
    if module is None:
        return True
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def needs_polling(root: str, partitions: list[Any] | None = None) -> bool:
    """Whether ``root`` lies on a filesystem that delivers no change events."""
    import psutil

    best = ("", "")
    real = os.path.realpath(root)
    for partition in psutil.disk_partitions(all=True) if partitions is None else partitions:
        mount = partition.mountpoint
        if (real == mount or real.startswith(mount.rstrip(os.sep) + os.sep)) and len(mount) > len(
            best[0]
        ):
            best = (mount, partition.fstype)
    fstype = best[1]
    return fstype in POLLED_FILESYSTEMS or fstype.startswith("fuse.sshfs")


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
