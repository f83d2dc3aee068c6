"""Shared fixtures: addon folders written into tmp_path, and the global state they touch.

Controllers register in ``devserve.http._controllers``, RPC services in
``devserve.rpc._services``, WSGI handlers in ``devserve.app._handlers``, and addon modules
stay in ``sys.modules`` as ``devserve_addons.<name>``; every test gets them back as they
were, and every addon gets a name no other test uses.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from devserve import addons, app, http, rpc

_counter = itertools.count()

WriteAddon = Callable[..., Path]


@pytest.fixture(autouse=True)
def _isolate_addons(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(http, "_controllers", list(http._controllers))
    monkeypatch.setattr(rpc, "_services", list(rpc._services))
    monkeypatch.setattr(app, "_handlers", list(app._handlers))
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name == addons.NAMESPACE or name.startswith(addons.NAMESPACE + "."):
            del sys.modules[name]


@pytest.fixture
def unique() -> Callable[[str], str]:
    """``unique("shop")`` -> ``shop_17``: a name no other test of the session uses."""
    return lambda prefix: f"{prefix}_{next(_counter)}"


@pytest.fixture
def write_addon() -> WriteAddon:
    """Write an addon folder: ``write_addon(root, name, code=..., depends=[...])``.

    ``manifest`` replaces the whole manifest text; ``files`` maps relative paths to contents.
    """

    def write(
        root: Path,
        name: str,
        *,
        code: str = "",
        depends: Sequence[str] = (),
        manifest: str | None = None,
        files: dict[str, str] | None = None,
    ) -> Path:
        folder = root / name
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text(textwrap.dedent(code), encoding="utf-8")
        if manifest is None:
            manifest = repr({"name": name, "version": "1.0", "depends": list(depends)})
        (folder / "__manifest__.py").write_text(manifest, encoding="utf-8")
        for relative, content in (files or {}).items():
            path = folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(content), encoding="utf-8")
        return folder

    return write


@pytest.fixture
def isolated_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """For running ``cli.main()``: an empty HOME (returned), no DEVSERVE_* variables,
    tmp_path as the current directory, and the logging set-up of ``serve()`` undone after."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for name in list(os.environ):
        if name.startswith("DEVSERVE_"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    root, werkzeug = logging.getLogger(), logging.getLogger("werkzeug")
    handlers, level, werkzeug_level = list(root.handlers), root.level, werkzeug.level
    yield home
    for handler in root.handlers:
        if handler not in handlers:
            handler.close()
    root.handlers[:] = handlers
    root.setLevel(level)
    werkzeug.setLevel(werkzeug_level)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one line a failed ``cli.main()`` wrote, on stderr; nothing on stdout."""
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("devserve: error: ")
    return lines[0]
