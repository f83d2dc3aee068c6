"""Shared fixtures: addon folders written into tmp_path, and the global state they touch.

Controllers register in ``devserve.http._controllers``, RPC services in
``devserve.rpc._services``, WSGI handlers in ``devserve.app._handlers``, and addon modules
stay in ``sys.modules`` as ``devserve_addons.<name>``; every test gets them back as they
were, and every addon gets a name no other test uses.
"""

from __future__ import annotations

import itertools
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
