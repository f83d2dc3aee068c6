"""The watch backends behind one contract (:class:`Backend`): inotify (the ``inotify``
package), watchdog, and stat polling for filesystems that deliver no events; and the walks
of a tree they share. The facade, :mod:`devserve.watcher`, chooses one and filters and
settles what they report."""

from __future__ import annotations

import abc
import contextlib
import errno
import functools
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devserve.watcher import PathFilter

__all__ = [
    "BACKENDS",
    "Backend",
    "InotifyBackend",
    "PollingBackend",
    "WatchdogBackend",
    "available",
    "backend_names",
    "needs_polling",
    "scan",
    "walk",
]

_logger = logging.getLogger("devserve.watcher")

# Filesystems that deliver no (or unreliable) inotify events for changes made elsewhere.
POLLED_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smbfs", "smb3", "9p", "drvfs", "vboxsf", "vmhgfs", "fuse.sshfs"}
)
Emit = Callable[[str], None]
Snapshot = dict[str, tuple[int, int, int]]  # path -> (mtime_ns, size, inode)


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

    def folders(self) -> list[str]:
        """The folders this backend watches (for the status): each one a recursive tree
        unless a backend says otherwise (inotify: each folder)."""
        return []


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

    def folders(self) -> list[str]:
        return [folder for folder, _root in list(self._roots)]

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

    def folders(self) -> list[str]:
        return list(self._roots_of)

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

    def folders(self) -> list[str]:
        emitters = list(self._observer.emitters)
        return [e.watch.path for e in emitters if e.watch.is_recursive]

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
