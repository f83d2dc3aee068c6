from __future__ import annotations

import ctypes
import errno
import logging
import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import inotify.calls
import psutil
import pytest

from devserve import watcher
from devserve._engine import backends
from devserve._engine.backends import (
    Backend,
    InotifyBackend,
    PollingBackend,
    WatchdogBackend,
    walk,
)
from devserve.watcher import Debouncer, PathFilter, Watcher

TIMEOUT = 10.0  # upper bound of every wait: a passing test never waits this long
POLL_INTERVAL = 0.05


def write(path: Path, text: str = "x = 1\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


class Recorder:
    """What a backend emitted (``emit``) or a Watcher delivered (``on_batch``), from any
    thread; ``wait_for`` blocks until some paths were seen, at most ``TIMEOUT``."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.paths: list[str] = []
        self.batches: list[tuple[frozenset[str], float]] = []

    def emit(self, path: str) -> None:
        with self._changed:
            self.paths.append(path)
            self._changed.notify_all()

    def on_batch(self, paths: frozenset[str], first_seen: float) -> None:
        with self._changed:
            self.batches.append((paths, first_seen))
            self.paths.extend(paths)
            self._changed.notify_all()

    def count(self, path: Path | str) -> int:
        with self._changed:
            return self.paths.count(str(path))

    def seen(self) -> set[str]:
        with self._changed:
            return set(self.paths)

    def wait_until(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def wait_for(self, *paths: Path | str) -> bool:
        wanted = {str(path) for path in paths}
        return self.wait_until(lambda: wanted <= set(self.paths))


# --- PathFilter ---


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("app.py", True),
        ("pkg/sub/models.py", True),
        ("index.html", False),
        ("README", False),
        ("data.json", False),
    ],
)
def test_default_include_is_python_files(tmp_path: Path, relative: str, expected: bool) -> None:
    assert PathFilter().matches(str(tmp_path / relative), str(tmp_path)) is expected


@pytest.mark.parametrize(
    "folder", [".git", "__pycache__", "node_modules", ".venv", "venv", ".tox", ".mypy_cache"]
)
def test_default_ignored_dirs(tmp_path: Path, folder: str) -> None:
    path_filter = PathFilter()
    (tmp_path / folder).mkdir()
    assert path_filter.watches_dir(str(tmp_path / folder), str(tmp_path)) is False
    assert path_filter.matches(str(tmp_path / folder / "x.py"), str(tmp_path)) is False
    assert (
        path_filter.matches(str(tmp_path / "pkg" / folder / "deep" / "x.py"), str(tmp_path))
        is False
    )


def test_folder_holding_pyvenv_cfg_is_not_watched(tmp_path: Path) -> None:
    write(tmp_path / "myenv" / "pyvenv.cfg", "home = /usr/bin\n")
    (tmp_path / "plain").mkdir()
    path_filter = PathFilter()
    assert path_filter.watches_dir(str(tmp_path / "myenv"), str(tmp_path)) is False
    assert path_filter.watches_dir(str(tmp_path / "plain"), str(tmp_path)) is True


@pytest.mark.parametrize(
    "name",
    [
        ".~lock.report.odt#",
        "x.py~",
        ".#x.py",
        ".x.py.swp",
        ".x.py.swx",
        "4913",
        "x.py___jb_tmp___",
        "___jb_tmp___",
        "___jb_old___",
        "db.sqlite-journal",
        "db.sqlite-wal",
        "db.sqlite-shm",
        "app.log",
        "x.pyc",
        "x.pyo",
    ],
)
def test_default_ignored_files(tmp_path: Path, name: str) -> None:
    # include everything, so only the default ignore list can refuse the file
    assert PathFilter(include=("*",)).matches(str(tmp_path / name), str(tmp_path)) is False


def test_include_everything_still_takes_ordinary_files(tmp_path: Path) -> None:
    assert PathFilter(include=("*",)).matches(str(tmp_path / "x.py.bak"), str(tmp_path)) is True


def test_exclude_without_slash_matches_any_component_name(tmp_path: Path) -> None:
    path_filter = PathFilter(exclude=("migrations", "test_*.py"))
    root = str(tmp_path)
    assert path_filter.matches(str(tmp_path / "shop" / "migrations" / "0001.py"), root) is False
    assert path_filter.matches(str(tmp_path / "shop" / "tests" / "test_cart.py"), root) is False
    assert path_filter.matches(str(tmp_path / "shop" / "models.py"), root) is True
    assert path_filter.watches_dir(str(tmp_path / "shop" / "migrations"), root) is False
    assert path_filter.watches_dir(str(tmp_path / "shop"), root) is True


def test_exclude_only_looks_below_the_root(tmp_path: Path) -> None:
    root = tmp_path / "migrations" / "project"  # an excluded name above the root
    path_filter = PathFilter(exclude=("migrations",))
    assert path_filter.matches(str(root / "app.py"), str(root)) is True
    assert path_filter.watches_dir(str(root / "pkg"), str(root)) is True


def test_exclude_with_slash_matches_the_path_relative_to_the_root(tmp_path: Path) -> None:
    path_filter = PathFilter(exclude=("shop/generated/*", "shop/vendor"))
    root = str(tmp_path)
    assert path_filter.matches(str(tmp_path / "shop" / "generated" / "api.py"), root) is False
    assert (
        path_filter.matches(str(tmp_path / "shop" / "generated" / "v2" / "api.py"), root) is False
    )
    # the same names elsewhere in the tree are not excluded
    assert path_filter.matches(str(tmp_path / "other" / "shop" / "generated" / "api.py"), root)
    assert path_filter.matches(str(tmp_path / "generated" / "api.py"), root) is True
    assert path_filter.watches_dir(str(tmp_path / "shop" / "vendor"), root) is False
    assert path_filter.watches_dir(str(tmp_path / "other" / "shop" / "vendor"), root) is True


def test_include_override(tmp_path: Path) -> None:
    root = str(tmp_path)
    html_only = PathFilter(include=("*.html",))
    assert html_only.matches(str(tmp_path / "views" / "page.html"), root) is True
    assert html_only.matches(str(tmp_path / "views" / "page.py"), root) is False
    both = PathFilter(include=("*.py", "*.html"))
    assert both.matches(str(tmp_path / "page.html"), root) is True
    assert both.matches(str(tmp_path / "page.py"), root) is True
    assert both.matches(str(tmp_path / "page.css"), root) is False


def test_watches_dir_plain_folder(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    assert PathFilter().watches_dir(str(tmp_path / "pkg"), str(tmp_path)) is True


def test_repr() -> None:
    assert repr(PathFilter()) == "PathFilter(include=['*.py'], exclude=[])"
    assert (
        repr(PathFilter(("*.py", "*.xml"), ("build",)))
        == "PathFilter(include=['*.py', '*.xml'], exclude=['build'])"
    )


# --- walk ---


def listing(root: Path, path_filter: PathFilter | None = None) -> dict[str, list[str]]:
    """``{folder relative to root: sorted entry names}`` for every folder walk() yields."""
    found: dict[str, list[str]] = {}
    for folder, entries in walk(str(root), path_filter or PathFilter()):
        relative = os.path.relpath(folder, root)
        assert relative not in found, f"{relative} yielded twice"
        found[relative] = sorted(entry.name for entry in entries)
    return found


def test_walk_yields_watched_folders_with_their_entries(tmp_path: Path) -> None:
    write(tmp_path / "app.py")
    write(tmp_path / "pkg" / "mod.py")
    write(tmp_path / "pkg" / "sub" / "deep.py")
    write(tmp_path / ".git" / "hooks" / "pre-commit.py")
    write(tmp_path / "node_modules" / "lib" / "index.py")
    write(tmp_path / "myenv" / "pyvenv.cfg", "home = /usr/bin\n")
    write(tmp_path / "myenv" / "lib" / "site.py")
    write(tmp_path / "generated" / "out.py")
    assert listing(tmp_path, PathFilter(exclude=("generated",))) == {
        ".": [".git", "app.py", "generated", "myenv", "node_modules", "pkg"],
        "pkg": ["mod.py", "sub"],
        "pkg/sub": ["deep.py"],
    }


def test_walk_follows_symlinked_folders(tmp_path: Path) -> None:
    root = tmp_path / "root"
    write(root / "app.py")
    write(tmp_path / "shared" / "lib.py")
    (root / "linked").symlink_to(tmp_path / "shared", target_is_directory=True)
    assert listing(root) == {".": ["app.py", "linked"], "linked": ["lib.py"]}


def test_walk_ends_on_a_symlink_loop(tmp_path: Path) -> None:
    write(tmp_path / "pkg" / "mod.py")
    (tmp_path / "pkg" / "up").symlink_to(tmp_path, target_is_directory=True)
    (tmp_path / "pkg" / "self").symlink_to(tmp_path / "pkg", target_is_directory=True)
    assert listing(tmp_path) == {".": ["pkg"], "pkg": ["mod.py", "self", "up"]}


def test_walk_survives_a_folder_vanishing(tmp_path: Path) -> None:
    for name in ("a", "b", "c"):
        write(tmp_path / name / "mod.py")
    yielded = []
    for folder, _entries in walk(str(tmp_path), PathFilter()):
        yielded.append(os.path.relpath(folder, tmp_path))
        if folder == str(tmp_path):  # listed, not yet visited: remove two of them
            shutil.rmtree(tmp_path / "a")
            shutil.rmtree(tmp_path / "c")
    assert yielded == [".", "b"]


def test_walk_of_a_missing_root_yields_nothing(tmp_path: Path) -> None:
    assert list(walk(str(tmp_path / "missing"), PathFilter())) == []


# --- Debouncer ---

Batch = tuple[frozenset[str], float]


@pytest.fixture
def debouncer() -> Iterator[Callable[..., tuple[Debouncer, queue.Queue[Batch]]]]:
    started: list[Debouncer] = []

    def start(**kwargs: Any) -> tuple[Debouncer, queue.Queue[Batch]]:
        batches: queue.Queue[Batch] = queue.Queue()
        debouncer = Debouncer(lambda paths, first_seen: batches.put((paths, first_seen)), **kwargs)
        debouncer.start()
        started.append(debouncer)
        return debouncer, batches

    yield start
    for debouncer in started:
        debouncer.stop()
        debouncer._thread.join(TIMEOUT)


def test_debouncer_burst_is_one_batch(
    debouncer: Callable[..., tuple[Debouncer, queue.Queue[Batch]]],
) -> None:
    deb, batches = debouncer(quiet=0.05, max_wait=5.0)
    before = time.monotonic()
    for path in ("a.py", "b.py", "a.py", "c.py"):
        deb.put(path)
    paths, first_seen = batches.get(timeout=TIMEOUT)
    assert paths == {"a.py", "b.py", "c.py"}
    assert before <= first_seen <= time.monotonic()
    deb.stop()
    deb._thread.join(TIMEOUT)
    assert batches.empty()


def test_debouncer_two_bursts_are_two_batches(
    debouncer: Callable[..., tuple[Debouncer, queue.Queue[Batch]]],
) -> None:
    deb, batches = debouncer(quiet=0.02, max_wait=5.0)
    deb.put("a.py")
    deb.put("b.py")
    time.sleep(0.2)  # the gap between the bursts, ten quiet periods
    gap_end = time.monotonic()
    deb.put("c.py")
    first, first_seen = batches.get(timeout=TIMEOUT)
    second, second_seen = batches.get(timeout=TIMEOUT)
    assert (first, second) == ({"a.py", "b.py"}, {"c.py"})
    assert first_seen < gap_end <= second_seen


def test_debouncer_max_wait_caps_an_endless_burst(
    debouncer: Callable[..., tuple[Debouncer, queue.Queue[Batch]]],
) -> None:
    # a path every 5 ms and a quiet period of 0.5 s: the burst never settles on its own
    deb, batches = debouncer(quiet=0.5, max_wait=0.2)
    feeding = threading.Event()
    feeding.set()
    fed: list[str] = []

    def feed() -> None:
        deadline = time.monotonic() + TIMEOUT
        while feeding.is_set() and time.monotonic() < deadline:
            fed.append(f"p{len(fed)}.py")
            deb.put(fed[-1])
            time.sleep(0.005)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        capped = []  # two batches cut by max_wait while the writes go on
        for _ in range(2):
            paths, first_seen = batches.get(timeout=TIMEOUT)
            capped.append((paths, first_seen, time.monotonic()))
        still_feeding = feeder.is_alive()
    finally:
        feeding.clear()
        feeder.join(TIMEOUT)
    assert still_feeding, "the batches came only once the writes stopped"
    for _paths, first_seen, received in capped:
        assert 0.2 <= received - first_seen < 0.2 + 2.0
    assert "p0.py" in capped[0][0]
    deb.put("last.py")
    delivered = capped[0][0] | capped[1][0]
    while "last.py" not in delivered:  # the remainder, once the writes stopped
        delivered |= batches.get(timeout=TIMEOUT)[0]
    assert delivered == {*fed, "last.py"}
    assert not capped[0][0] & capped[1][0]


def test_debouncer_stop_ends_the_thread(
    debouncer: Callable[..., tuple[Debouncer, queue.Queue[Batch]]],
) -> None:
    deb, batches = debouncer(quiet=0.02)
    assert deb._thread.is_alive()
    deb.stop()
    deb._thread.join(TIMEOUT)
    assert not deb._thread.is_alive()
    deb.put("late.py")  # nobody listens any more
    assert batches.empty()


# --- the debouncer on a fake clock, fed by a backend that replays scripted events ---


class ManualClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class ScriptedBackend(Backend):
    """A backend whose events are a script of (seconds, path) pairs, replayed on a fake
    clock: each path goes through the backend contract (the path filter, then ``emit``)
    as a real backend's would, and the debouncer takes its turn after each."""

    name = "scripted"

    def __init__(self, path_filter: PathFilter, debouncer: Debouncer, clock: ManualClock) -> None:
        super().__init__(path_filter, debouncer.put)
        self.debouncer = debouncer
        self.clock = clock
        self.roots: list[str] = []

    def start(self, roots: list[str], files: Iterable[str] = ()) -> None:
        self.roots = list(roots)

    def add_root(self, root: str) -> None:
        self.roots.append(root)

    def stop(self) -> None:
        self.debouncer.stop()

    def replay(self, script: Iterable[tuple[float, str]], until: float) -> None:
        start = self.clock.now
        for at, path in script:
            self.idle(start + at)
            self.report(os.path.join(self.roots[0], path), self.roots[0])
            self.debouncer.pump()
        self.idle(start + until)

    def idle(self, until: float) -> None:
        """Time passes without events: the debouncer wakes when its batch is due."""
        while (wait := self.debouncer.due_in(self.clock.now)) is not None:
            if self.clock.now + wait > until:
                break
            self.clock.now += wait
            self.debouncer.pump()
        self.clock.now = max(self.clock.now, until)


@pytest.fixture
def scripted() -> Callable[..., tuple[ScriptedBackend, list[Batch]]]:
    def make(quiet: float = 0.01, max_wait: float = 2.0) -> tuple[ScriptedBackend, list[Batch]]:
        batches: list[Batch] = []
        clock = ManualClock()
        debouncer = Debouncer(
            lambda paths, first: batches.append((paths, first)), quiet, max_wait, clock
        )
        backend = ScriptedBackend(PathFilter(), debouncer, clock)
        backend.start(["/project"])
        return backend, batches

    return make


def relative(batches: list[Batch], start: float = 500.0) -> list[tuple[list[str], float]]:
    """Batches as (sorted paths under /project, first seen in seconds from the start)."""
    return [
        (sorted(os.path.relpath(p, "/project") for p in paths), round(first - start, 3))
        for paths, first in batches
    ]


def test_a_checkout_of_500_files_is_one_batch(scripted: Callable[..., Any]) -> None:
    backend, batches = scripted(quiet=0.01)
    backend.replay(((i * 0.002, f"app/m{i}.py") for i in range(500)), until=5.0)
    [(paths, first_seen)] = relative(batches)
    assert len(paths) == 500
    assert first_seen == 0.0


def test_a_bulk_write_that_stalls_for_a_moment_is_still_one_batch(
    scripted: Callable[..., Any],
) -> None:
    """Past BULK_BATCH files, a pause longer than the quiet time (a busy machine stalling
    the writer) does not cut the batch; a lone edit still settles after the quiet time."""
    backend, batches = scripted(quiet=0.01)
    first = [(i * 0.001, f"app/m{i}.py") for i in range(40)]
    rest = [(0.070 + i * 0.001, f"app/n{i}.py") for i in range(60)]  # after a 30 ms stall
    backend.replay([*first, *rest], until=1.0)
    [(paths, _first_seen)] = relative(batches)
    assert len(paths) == 100
    backend.replay([(0.0, "shop/views.py")], until=0.015)
    assert relative(batches[1:], start=501.0) == [(["shop/views.py"], 0.0)]


def test_edits_further_apart_than_the_quiet_time_are_separate_batches(
    scripted: Callable[..., Any],
) -> None:
    backend, batches = scripted(quiet=0.05)
    script = [(0.0, "a.py"), (0.04, "b.py"), (0.2, "c.py"), (0.26, "d.py")]
    backend.replay(script, until=1.0)
    assert relative(batches) == [(["a.py", "b.py"], 0.0), (["c.py"], 0.2), (["d.py"], 0.26)]


def test_a_writer_that_never_pauses_is_cut_at_max_wait(scripted: Callable[..., Any]) -> None:
    backend, batches = scripted(quiet=0.01, max_wait=2.0)
    backend.replay(((i * 0.005, f"log{i % 7}.py") for i in range(1000)), until=6.0)
    assert [first for _paths, first in relative(batches)] == [0.0, 2.0, 4.0]
    assert all(len(paths) == 7 for paths, _first in relative(batches))


def test_paths_the_filter_ignores_never_make_a_batch(scripted: Callable[..., Any]) -> None:
    backend, batches = scripted()
    noise = ["a.pyc", "__pycache__/a.cpython-311.pyc", ".a.py.swp", ".git/index", "x.py~"]
    backend.replay(((i * 0.001, path) for i, path in enumerate(noise)), until=1.0)
    assert batches == []
    backend.replay([(0.0, ".git/HEAD"), (0.001, "shop/views.py")], until=1.0)
    assert relative(batches, start=501.0) == [(["shop/views.py"], 0.001)]


def test_nothing_is_handed_on_after_stop(scripted: Callable[..., Any]) -> None:
    backend, batches = scripted(quiet=0.05)
    backend.replay([(0.0, "a.py")], until=0.01)
    backend.stop()
    assert backend.debouncer.pump() is False
    backend.idle(backend.clock.now + 1.0)
    assert batches == []


# --- backends against a real tree ---


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "project"
    write(root / "app.py")
    write(root / "pkg" / "__init__.py", "")
    write(root / "pkg" / "mod.py", "value = 1\n")
    write(root / "pkg" / "old.py")
    write(root / ".git" / "hooks" / "hook.py")
    write(root / "node_modules" / "lib" / "index.py")
    write(root / "myenv" / "pyvenv.cfg", "home = /usr/bin\n")
    write(root / "myenv" / "lib" / "site.py")
    write(root / "generated" / "out.py")
    write(root / "sentinel.py", "")
    return root


class Watched:
    """A started backend and what it reported."""

    def __init__(self, backend: Backend, recorder: Recorder, sentinel: Path) -> None:
        self.backend = backend
        self.recorder = recorder
        self.sentinel = sentinel

    def wait_for(self, *paths: Path | str) -> bool:
        return self.recorder.wait_for(*paths)

    def settle(self) -> None:
        """Return once every change made before the call has been reported, if it ever
        will be: the sentinel is changed twice and each change awaited (a poller scans in
        no particular order, so one scan's reports are only complete once the next began)."""
        for _ in range(2):
            before = self.recorder.count(self.sentinel)
            with self.sentinel.open("a", encoding="utf-8") as file:
                file.write("# touched\n")
            assert self.recorder.wait_until(
                lambda before=before: self.recorder.count(self.sentinel) > before
            ), "the sentinel change was never reported"


def make_backend(name: str, path_filter: PathFilter, emit: Callable[[str], None]) -> Backend:
    if name == "poll":
        return PollingBackend(path_filter, emit, interval=POLL_INTERVAL)
    return {"inotify": InotifyBackend, "watchdog": WatchdogBackend}[name](path_filter, emit)


StartBackend = Callable[..., Watched]


@pytest.fixture(params=["inotify", "watchdog", "poll"])
def start_backend(request: pytest.FixtureRequest, tree: Path) -> Iterator[StartBackend]:
    started: list[Backend] = []

    def start(
        roots: tuple[Path, ...] = (tree,),
        files: tuple[Path, ...] = (),
        path_filter: PathFilter | None = None,
    ) -> Watched:
        recorder = Recorder()
        backend = make_backend(request.param, path_filter or PathFilter(), recorder.emit)
        started.append(backend)
        backend.start([str(root) for root in roots], [str(file) for file in files])
        return Watched(backend, recorder, tree / "sentinel.py")

    yield start
    for backend in started:
        backend.stop()


def test_backend_reports_a_created_file(start_backend: StartBackend, tree: Path) -> None:
    watched = start_backend()
    created = write(tree / "pkg" / "new.py")
    assert watched.wait_for(created), watched.recorder.paths


def test_backend_reports_an_in_place_write(start_backend: StartBackend, tree: Path) -> None:
    watched = start_backend()
    with (tree / "pkg" / "mod.py").open("r+", encoding="utf-8") as file:
        file.write("value = 22\n")
    assert watched.wait_for(tree / "pkg" / "mod.py"), watched.recorder.paths


def test_backend_reports_an_atomic_rename_save(start_backend: StartBackend, tree: Path) -> None:
    watched = start_backend()
    temporary = write(tree / "pkg" / ".mod.py.tmp1234", "value = 333\n")
    os.replace(temporary, tree / "pkg" / "mod.py")
    assert watched.wait_for(tree / "pkg" / "mod.py"), watched.recorder.paths


def test_backend_reports_a_deleted_file(start_backend: StartBackend, tree: Path) -> None:
    watched = start_backend()
    (tree / "pkg" / "old.py").unlink()
    assert watched.wait_for(tree / "pkg" / "old.py"), watched.recorder.paths


def test_backend_reports_a_file_in_a_new_folder(start_backend: StartBackend, tree: Path) -> None:
    watched = start_backend()
    (tree / "fresh").mkdir()
    inner = write(tree / "fresh" / "inner.py")
    nested = write(tree / "fresh" / "deeper" / "nested.py")
    assert watched.wait_for(inner, nested), watched.recorder.paths
    later = write(tree / "fresh" / "deeper" / "later.py")  # the new folders are watched
    assert watched.wait_for(later), watched.recorder.paths


def test_backend_watches_a_folder_deleted_and_created_again(
    start_backend: StartBackend, tree: Path
) -> None:
    watched = start_backend()
    shutil.rmtree(tree / "pkg")
    assert watched.wait_for(tree / "pkg" / "mod.py"), watched.recorder.paths
    (tree / "pkg").mkdir()
    watched.settle()  # the new folder is known before anything is written into it
    again = write(tree / "pkg" / "again.py")
    assert watched.wait_for(again), watched.recorder.paths


def test_backend_watches_a_folder_renamed_away_and_created_again(
    start_backend: StartBackend, tree: Path
) -> None:
    watched = start_backend()
    (tree / "pkg").rename(tree / "pkg_moved")
    (tree / "pkg").mkdir()
    watched.settle()
    again = write(tree / "pkg" / "again.py")
    moved = write(tree / "pkg_moved" / "still.py")
    assert watched.wait_for(again, moved), watched.recorder.paths
    assert str(tree / "pkg" / "still.py") not in watched.recorder.seen()


@pytest.mark.parametrize(
    "relative",
    [
        ".git/hooks/hook.py",
        "node_modules/lib/index.py",
        "myenv/lib/site.py",  # myenv holds pyvenv.cfg
        "generated/out.py",  # excluded by the filter
        "__pycache__/fresh.py",  # an ignored folder created while watching
        ".git/fresh/deep.py",
    ],
)
def test_backend_ignores_files_in_ignored_folders(
    start_backend: StartBackend, tree: Path, relative: str
) -> None:
    watched = start_backend(path_filter=PathFilter(exclude=("generated",)))
    ignored = write(tree / relative, "x = 'changed'\n")
    watched.settle()
    assert str(ignored) not in watched.recorder.seen()


def test_backend_reports_single_watched_files_outside_the_roots(
    start_backend: StartBackend, tree: Path, tmp_path: Path
) -> None:
    watched_file = write(tmp_path / "etc" / "devserve.conf", "[options]\n")
    sibling = write(tmp_path / "etc" / "sibling.py")
    watched = start_backend(files=(watched_file,))
    write(sibling, "x = 'changed'\n")
    write(watched_file, "[options]\nworkers = 2\n")  # not *.py: listed files always count
    assert watched.wait_for(watched_file), watched.recorder.paths
    watched.settle()
    assert str(sibling) not in watched.recorder.seen()


def test_inotify_watches_a_folder_before_listing_it(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files created in a new folder while it is being listed are not missed: the watch
    must exist before the listing, not after."""
    fresh = tree / "fresh"
    real_walk = backends.walk

    def racing_walk(root: str, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for folder, entries in real_walk(root, *args, **kwargs):
            if folder == str(fresh):  # listed already: a writer is faster than the watcher
                write(fresh / "late.py")
                write(fresh / "late_pkg" / "inner.py")
            yield folder, entries

    monkeypatch.setattr(backends, "walk", racing_walk)
    recorder = Recorder()
    backend = InotifyBackend(PathFilter(), recorder.emit)
    try:
        backend.start([str(tree)])
        fresh.mkdir()
        assert recorder.wait_for(fresh / "late.py", fresh / "late_pkg" / "inner.py"), recorder.paths
        later = write(fresh / "late_pkg" / "later.py")
        assert recorder.wait_for(later), recorder.paths
    finally:
        backend.stop()


# --- inotify out of watches ---


@pytest.fixture
def out_of_watches(monkeypatch: pytest.MonkeyPatch) -> Callable[[int], list[str]]:
    """``out_of_watches(n)``: from the n-th call on, inotify_add_watch fails with ENOSPC
    (the max_user_watches limit); returns the folders it was asked to watch."""

    def limit(allowed: int) -> list[str]:
        real = inotify.calls.inotify_add_watch
        asked: list[str] = []

        def add_watch(fd: int, path: bytes, mask: int) -> int:
            asked.append(os.fsdecode(path))
            if len(asked) > allowed:
                ctypes.set_errno(errno.ENOSPC)
                raise inotify.calls.InotifyError(f"Call failed: {path!r}")
            result: int = real(fd, path, mask)
            return result

        monkeypatch.setattr(inotify.calls, "inotify_add_watch", add_watch)
        return asked

    return limit


@pytest.fixture
def crowded(tmp_path: Path) -> Path:
    """A root whose two sub-trees will not fit once the root itself is watched."""
    root = tmp_path / "crowded"
    write(root / "top.py")
    write(root / "a" / "deep" / "deeper" / "x.py")
    write(root / "b" / "y.py")
    return root


def test_inotify_out_of_watches_marks_the_top_of_each_pruned_subtree(
    crowded: Path, out_of_watches: Callable[[int], list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    asked = out_of_watches(1)
    recorder = Recorder()
    backend = InotifyBackend(PathFilter(), recorder.emit)
    with caplog.at_level(logging.WARNING, logger="devserve.watcher"):
        try:
            backend.start([str(crowded)])
        finally:
            backend.stop()
    assert sorted(backend.unwatchable) == [str(crowded / "a"), str(crowded / "b")]
    assert sorted(asked) == [str(crowded), str(crowded / "a"), str(crowded / "b")]
    [warning] = [r for r in caplog.records if r.name == "devserve.watcher"]
    assert warning.levelno == logging.WARNING
    assert "fs.inotify.max_user_watches" in warning.getMessage()


def test_inotify_error_other_than_enospc_is_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def add_watch(fd: int, path: bytes, mask: int) -> int:
        ctypes.set_errno(errno.EINVAL)
        raise inotify.calls.InotifyError("Call failed")

    monkeypatch.setattr(inotify.calls, "inotify_add_watch", add_watch)
    backend = InotifyBackend(PathFilter(), Recorder().emit)
    with pytest.raises(inotify.calls.InotifyError) as raised:
        backend.start([str(tmp_path)])
    assert raised.value.errno == errno.EINVAL
    assert backend.unwatchable == []


# --- Watcher ---

StartWatcher = Callable[..., tuple[Watcher, Recorder]]


@pytest.fixture
def start_watcher() -> Iterator[StartWatcher]:
    started: list[Watcher] = []

    def start(roots: list[Path], **kwargs: Any) -> tuple[Watcher, Recorder]:
        recorder = Recorder()
        kwargs.setdefault("quiet", 0.02)
        files = [str(file) for file in kwargs.pop("files", [])]
        watcher = Watcher([str(root) for root in roots], recorder.on_batch, files, **kwargs)
        started.append(watcher)
        watcher.start()
        return watcher, recorder

    yield start
    for started_watcher in started:
        started_watcher.stop()


def test_watcher_polls_the_folders_inotify_cannot_watch(
    crowded: Path,
    out_of_watches: Callable[[int], list[str]],
    start_watcher: StartWatcher,
    caplog: pytest.LogCaptureFixture,
) -> None:
    out_of_watches(1)
    with caplog.at_level(logging.WARNING, logger="devserve.watcher"):
        watcher, recorder = start_watcher([crowded], backend="inotify")
    assert watcher.describe() == "inotify + poll"
    [_inotify, poller] = watcher.backends
    assert isinstance(poller, PollingBackend)
    # Polled with their original root, so globs with "/" still match from there.
    assert sorted(poller._roots) == [
        (str(crowded / "a"), str(crowded)),
        (str(crowded / "b"), str(crowded)),
    ]
    assert len([r for r in caplog.records if "max_user_watches" in r.getMessage()]) == 1
    polled = write(crowded / "a" / "deep" / "deeper" / "x.py", "x = 'changed'\n")
    watched = write(crowded / "top.py", "top = 'changed'\n")  # still inotify's
    assert recorder.wait_for(polled, watched), recorder.batches


def test_watcher_treats_a_file_root_as_a_watched_file(
    tmp_path: Path, start_watcher: StartWatcher
) -> None:
    settings = write(tmp_path / "settings.cfg", "[options]\n")
    sibling = write(tmp_path / "sibling.py")
    watcher, recorder = start_watcher([settings], backend="inotify")
    assert watcher.roots == []
    assert watcher.files == [str(settings)]
    assert watcher.describe() == "inotify"
    write(sibling, "x = 'changed'\n")
    write(settings, "[options]\nworkers = 3\n")
    assert recorder.wait_for(settings), recorder.batches
    assert str(sibling) not in recorder.seen()


def test_watcher_since_reports_what_changed_before_the_watches_existed(
    tree: Path, tmp_path: Path, start_watcher: StartWatcher
) -> None:
    now = time.time()
    settings = write(tmp_path / "settings.cfg", "[options]\n")
    stale = write(tmp_path / "stale.cfg", "[options]\n")
    for path in [*tree.rglob("*"), stale]:
        os.utime(path, (now - 3600, now - 3600))
    changed = write(tree / "pkg" / "mod.py", "value = 'changed during start-up'\n")
    os.utime(settings, (now, now))
    _watcher, recorder = start_watcher(
        [tree, settings], files=[stale], since=now - 60, backend="inotify", quiet=0.2
    )
    assert recorder.wait_for(changed, settings), recorder.batches
    assert recorder.batches[0][0] == {str(changed), str(settings)}


def test_watcher_without_since_reports_nothing_at_start(
    tree: Path, start_watcher: StartWatcher
) -> None:
    _watcher, recorder = start_watcher([tree], backend="inotify")
    sentinel = write(tree / "sentinel.py", "changed = True\n")
    assert recorder.wait_for(sentinel)
    assert recorder.seen() == {str(sentinel)}


def test_watcher_poll_backend_only_polls(tree: Path, start_watcher: StartWatcher) -> None:
    watcher, recorder = start_watcher([tree], backend="poll")
    assert watcher.describe() == "poll"
    assert all(isinstance(backend, PollingBackend) for backend in watcher.backends)
    changed = write(tree / "pkg" / "mod.py", "value = 'polled'\n")
    assert recorder.wait_for(changed), recorder.batches


# --- network filesystems are polled ---


def fake_partitions(monkeypatch: pytest.MonkeyPatch, mounts: dict[str, str]) -> None:
    partitions = [
        SimpleNamespace(device=f"dev{i}", mountpoint=mount, fstype=fstype, opts="rw")
        for i, (mount, fstype) in enumerate(mounts.items())
    ]
    monkeypatch.setattr(psutil, "disk_partitions", lambda all=False: partitions)


@pytest.mark.parametrize(
    ("fstype", "polled"),
    [
        ("nfs", True),
        ("nfs4", True),
        ("cifs", True),
        ("smb3", True),
        ("9p", True),
        ("drvfs", True),
        ("vboxsf", True),
        ("vmhgfs", True),
        ("fuse.sshfs", True),
        ("ext4", False),
        ("xfs", False),
        ("btrfs", False),
        ("tmpfs", False),
        ("overlay", False),
    ],
)
def test_needs_polling_by_filesystem_type(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fstype: str, polled: bool
) -> None:
    mount = os.path.realpath(tmp_path)
    fake_partitions(monkeypatch, {"/": "ext4", mount: fstype})
    assert backends.needs_polling(str(tmp_path / "project")) is polled
    assert backends.needs_polling(str(tmp_path)) is polled


@pytest.mark.parametrize(
    ("outer", "inner", "polled"), [("nfs", "ext4", False), ("ext4", "9p", True)]
)
def test_needs_polling_longest_mount_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, outer: str, inner: str, polled: bool
) -> None:
    real = os.path.realpath(tmp_path)
    # listed shortest last, so the order of the list decides nothing
    fake_partitions(monkeypatch, {os.path.join(real, "mnt"): inner, real: outer, "/": "ext4"})
    assert backends.needs_polling(os.path.join(real, "mnt", "project")) is polled
    assert backends.needs_polling(os.path.join(real, "elsewhere")) is (outer != "ext4")


def test_needs_polling_mount_is_a_path_prefix_not_a_string_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.path.realpath(tmp_path)
    fake_partitions(monkeypatch, {"/": "ext4", os.path.join(real, "share"): "nfs"})
    assert backends.needs_polling(os.path.join(real, "share", "app")) is True
    assert backends.needs_polling(os.path.join(real, "shared", "app")) is False


def test_needs_polling_resolves_symlinks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.path.realpath(tmp_path)
    (tmp_path / "share").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "share", target_is_directory=True)
    fake_partitions(monkeypatch, {"/": "ext4", os.path.join(real, "share"): "nfs"})
    assert backends.needs_polling(str(tmp_path / "link")) is True


def test_auto_polls_a_root_on_nfs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_watcher: StartWatcher
) -> None:
    remote = write(tmp_path / "remote" / "app.py").parent
    local = write(tmp_path / "local" / "app.py").parent
    fake_partitions(monkeypatch, {"/": "ext4", os.path.realpath(remote): "nfs"})
    watcher, recorder = start_watcher([remote, local], backend="auto")
    assert watcher.describe() == "inotify + poll"
    [_inotify, poller] = watcher.backends
    assert poller._roots == [(str(remote), str(remote))]
    changed = write(remote / "app.py", "x = 'changed on the server'\n")
    assert recorder.wait_for(changed), recorder.batches


def test_auto_with_every_root_on_nfs_only_polls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, start_watcher: StartWatcher
) -> None:
    remote = write(tmp_path / "remote" / "app.py").parent
    fake_partitions(monkeypatch, {"/": "ext4", os.path.realpath(tmp_path): "nfs"})
    watcher, _recorder = start_watcher([remote], backend="auto")
    assert watcher.describe() == "poll"


def test_folder_created_after_running_out_of_watches_is_polled(
    crowded: Path,
    out_of_watches: Callable[[int], list[str]],
    start_watcher: StartWatcher,
) -> None:
    """inotify can run out of watches while running too: the new folder is polled, and
    the files already in it are reported (they are new)."""
    limit = sum(1 for _ in walk(str(crowded), PathFilter()))  # exactly enough for the tree
    out_of_watches(limit)
    watcher, recorder = start_watcher([crowded], backend="inotify")
    assert watcher.describe() == "inotify"
    late = crowded / "late"
    late.mkdir()
    early = write(late / "early.py", "x = 1\n")  # inside before anyone could watch it
    assert recorder.wait_for(early), recorder.batches
    assert watcher.describe() == "inotify + poll"
    write(late / "early.py", "x = 2  # changed, and longer\n")
    assert recorder.wait_until(lambda: recorder.count(early) >= 2), recorder.batches


def test_polled_subtree_keeps_excludes_relative_to_its_root(
    crowded: Path,
    out_of_watches: Callable[[int], list[str]],
    start_watcher: StartWatcher,
) -> None:
    out_of_watches(1)
    watcher, recorder = start_watcher(
        [crowded], backend="inotify", path_filter=PathFilter(exclude=("a/deep/*",))
    )
    assert watcher.describe() == "inotify + poll"
    write(crowded / "a" / "deep" / "deeper" / "x.py", "x = 'excluded'\n")
    kept = write(crowded / "a" / "kept.py", "x = 'kept'\n")
    assert recorder.wait_for(kept), recorder.batches
    assert not any("deeper" in path for path in recorder.seen()), recorder.batches


# --- review fixes ---


def _inotify_descriptors() -> set[str]:
    return {fd for fd in os.listdir("/proc/self/fd") if "inotify" in _link(f"/proc/self/fd/{fd}")}


def _link(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:
        return ""


def test_inotify_backend_releases_its_descriptor_once_stopped(tmp_path: Path) -> None:
    before = _inotify_descriptors()
    backend = InotifyBackend(PathFilter(), Recorder().emit)
    backend.start([str(tmp_path)])
    [own] = _inotify_descriptors() - before  # other tests' backends may come and go
    backend.stop()
    deadline = time.monotonic() + TIMEOUT
    while own in _inotify_descriptors():
        assert time.monotonic() < deadline, "the inotify descriptor stayed open"
        time.sleep(0.05)


def test_debouncer_hands_nothing_on_once_stopped() -> None:
    recorder = Recorder()
    debouncer = Debouncer(recorder.on_batch, quiet=0.05)
    debouncer.start()
    debouncer.put("/a.py")
    debouncer.stop()
    assert not debouncer._thread.is_alive()
    assert recorder.batches == []  # the batch under way was dropped, not delivered late


def test_a_file_being_written_is_reported_only_once_closed(tmp_path: Path) -> None:
    recorder = Recorder()
    backend = InotifyBackend(PathFilter(), recorder.emit)
    backend.start([str(tmp_path)])
    try:
        held = open(tmp_path / "half.py", "w")  # noqa: SIM115 (closed below, on purpose late)
        held.write("def f(")
        held.flush()
        marker = write(tmp_path / "marker.py")
        assert recorder.wait_for(marker)
        assert str(tmp_path / "half.py") not in recorder.seen()  # truncated, not complete
        held.write("): pass\n")
        held.close()
        assert recorder.wait_for(tmp_path / "half.py")
    finally:
        backend.stop()


def test_walk_matches_excludes_from_the_root_not_the_start(tmp_path: Path) -> None:
    write(tmp_path / "pkg" / "gen" / "x.py")
    write(tmp_path / "pkg" / "kept" / "y.py")
    path_filter = PathFilter(exclude=("pkg/gen",))
    folders = [folder for folder, _ in walk(str(tmp_path / "pkg"), path_filter, root=str(tmp_path))]
    assert str(tmp_path / "pkg" / "kept") in folders
    assert str(tmp_path / "pkg" / "gen") not in folders


# --- what a project needs: data folders, folder globs, roots added later, atomic saves ---


@pytest.mark.parametrize("folder", sorted(watcher.DATA_DIRS))
def test_data_folders_are_not_watched_unless_a_package(tmp_path: Path, folder: str) -> None:
    path_filter = PathFilter()
    data = tmp_path / folder
    data.mkdir()
    assert path_filter.watches_dir(str(data), str(tmp_path)) is False
    write(data / "__init__.py", "")  # a package of that name is code
    assert path_filter.watches_dir(str(data), str(tmp_path)) is True


def test_an_include_glob_with_slash_also_matches_from_the_root_name(tmp_path: Path) -> None:
    path_filter = PathFilter(include=("templates/*", "*/templates/*"))
    assert path_filter.matches("/p/shop/templates/shop/mail.txt", "/p/shop")
    assert path_filter.matches("/p/templates/mail.txt", "/p/templates")  # the root itself
    assert path_filter.matches("/p/templates/mail.txt", "/p")
    assert not path_filter.matches("/p/shop/mail.txt", "/p/shop")
    assert not path_filter.matches("/p/shop/templates.txt", "/p/shop")


@pytest.mark.parametrize("backend", ["inotify", "watchdog", "poll"])
def test_watcher_add_roots_watches_a_folder_while_running(
    tree: Path, tmp_path: Path, start_watcher: StartWatcher, backend: str
) -> None:
    other = tmp_path / "other"
    write(other / "__init__.py", "")
    watcher_, recorder = start_watcher([tree], backend=backend)
    assert watcher_.add_roots([str(other), str(tree / "pkg"), str(tmp_path / "nowhere")]) == [
        str(other)
    ]
    assert watcher_.add_roots([str(other)]) == []  # once
    assert watcher_.roots == [str(tree), str(other)]
    changed = write(other / "views.py", "x = 'changed'\n")
    assert recorder.wait_for(changed), recorder.batches


def test_watcher_add_roots_reports_what_changed_there_since(
    tree: Path, tmp_path: Path, start_watcher: StartWatcher
) -> None:
    now = time.time()
    other = tmp_path / "other"
    stale = write(other / "old.py")
    os.utime(stale, (now - 3600, now - 3600))
    edited = write(other / "views.py", "x = 'edited before it was watched'\n")
    watcher_, recorder = start_watcher([tree], backend="inotify", since=now - 60)
    stale_in_tree = [path for path in tree.rglob("*.py") if path.stat().st_mtime > now - 60]
    watcher_.add_roots([str(other)])
    assert recorder.wait_for(edited), recorder.batches
    assert str(stale) not in recorder.seen()
    assert recorder.seen() <= {str(edited), *map(str, stale_in_tree)}


def test_watcher_add_roots_starts_an_event_backend_when_it_had_none(
    tmp_path: Path, start_watcher: StartWatcher
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    watcher_, recorder = start_watcher([], backend="inotify")
    assert watcher_.describe() == "nothing"
    watcher_.add_roots([str(other)])
    assert watcher_.describe() == "inotify"
    changed = write(other / "views.py")
    assert recorder.wait_for(changed), recorder.batches


def test_an_atomic_save_reports_the_saved_file_not_its_temporary_file(
    tmp_path: Path, start_watcher: StartWatcher
) -> None:
    templates = tmp_path / "templates"
    page = write(templates / "page.html", "v1")
    every_file = PathFilter(include=("templates/*",))
    _watcher, recorder = start_watcher(
        [templates], backend="inotify", quiet=0.1, path_filter=every_file
    )
    temporary = write(templates / "sedX1y2Z3", "v2")  # as sed -i and editors do
    os.replace(temporary, page)
    assert recorder.wait_for(page), recorder.batches
    assert recorder.batches[0][0] == {str(page)}


def test_a_deleted_file_on_its_own_is_reported(tmp_path: Path, start_watcher: StartWatcher) -> None:
    gone = write(tmp_path / "pkg" / "gone.py")
    _watcher, recorder = start_watcher([tmp_path / "pkg"], backend="inotify")
    gone.unlink()
    assert recorder.wait_for(gone), recorder.batches


def test_backend_reports_a_single_watched_folder_coming_back(
    start_backend: StartBackend, tree: Path, tmp_path: Path
) -> None:
    """An addons folder gone (rm -rf): watched as a single path from its parent."""
    gone = tmp_path / "addons"
    watched = start_backend(files=(gone,))
    gone.mkdir()
    assert watched.wait_for(gone), watched.recorder.paths
