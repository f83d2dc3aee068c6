"""--dev reload's watch over a running image: what a batch of changes does, folders learned
from prefork workers, the folders handed to the next image."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

import pytest

from devserve import watching
from devserve._engine import worker
from devserve.config import Settings
from devserve.frameworks import Integration
from devserve.reloader import FileChanges

SETTINGS = Settings(dev=("reload",))


class Templates(Integration):
    """A framework that re-reads the files of a folder itself."""

    name = "fake"

    def __init__(self, folder: Path, fails: bool = False) -> None:
        super().__init__(None, SETTINGS)
        self.folder = str(folder)
        self.fails = fails

    def static_folders(self) -> list[str]:
        return [os.path.join(self.folder, "assets")]

    def refresh(self, paths: Iterable[str], in_process: bool) -> set[str]:
        if self.fails:
            raise RuntimeError("the framework broke")
        return {path for path in paths if path.startswith(self.folder + "/templates/")}


def changes(*paths: Path) -> FileChanges:
    return FileChanges(frozenset(str(path) for path in paths), time.monotonic())


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    made = {
        "views": tmp_path / "views.py",
        "broken": tmp_path / "broken.py",
        "template": tmp_path / "templates" / "page.html",
        "static": tmp_path / "static" / "page.html",
        "asset": tmp_path / "assets" / "site.html",
    }
    for path in made.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n")
    made["broken"].write_text("def broken(:\n")
    return made


def test_static_files_and_refreshed_templates_do_not_reload(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    watch = watching.ReloadWatch(SETTINGS, [], since=0.0, integration=Templates(tmp_path))
    assert watch.on_changes(changes(files["asset"], files["template"])) == set()
    # Only the views reload (the reload's log line names them).
    assert watch.on_changes(changes(files["template"], files["views"])) == {str(files["views"])}
    assert watch.on_changes(changes(files["broken"], files["views"])) == set()  # syntax check


def test_a_static_folder_is_known_from_the_watched_root(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    watch = watching.ReloadWatch(SETTINGS, [], since=0.0)

    class Started:
        roots = [str(tmp_path)]

    watch.watcher = Started()
    assert watch.on_changes(changes(files["static"])) == set()
    assert watch.on_changes(changes(files["template"])) == {str(files["template"])}


def test_a_failing_framework_means_a_reload(
    tmp_path: Path, files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    broken = Templates(tmp_path, fails=True)
    watch = watching.ReloadWatch(SETTINGS, [], since=0.0, integration=broken)
    assert watch.on_changes(changes(files["template"])) == {str(files["template"])}
    assert "the framework broke" in caplog.text


def test_the_folders_watched_go_to_the_next_image(tmp_path: Path) -> None:
    first, second, learned = (str(tmp_path / name) for name in ("first", "second", "extras"))
    watch = watching.ReloadWatch(SETTINGS, [], since=0.0, remembered=[first])

    class Started:
        roots = [first, second]

    watch.watcher = Started()
    watch.learned([learned, "relative/folder", os.path.dirname(os.__file__)])
    assert watch.folders_to_remember() == [first, second, learned]
    assert watch.folders_to_remember() == [first, second]  # what was learned, handed once


# --- what a prefork worker writes on its heartbeat pipe ---


def report(*folders: str) -> bytes:
    return worker.IMPORTED + "\0".join(folders).encode() + worker.IMPORTED_END


def test_heartbeats_and_reported_folders_are_told_apart() -> None:
    data = b"r." + report("/p/extras", "/p/more") + b".." + report("/p/other")
    assert worker.read_heartbeats(data) == (b"r...", ["/p/extras", "/p/more", "/p/other"], b"")


def test_a_report_cut_in_two_is_read_once_whole() -> None:
    whole = b"." + report("/srv/ready/r")
    beats, folders, unread = worker.read_heartbeats(whole[:9])
    assert (beats, folders) == (b".", [])
    # The "r" of a folder's name is no READY heartbeat.
    assert worker.READY not in beats
    assert worker.read_heartbeats(unread + whole[9:] + b".") == (b".", ["/srv/ready/r"], b"")
