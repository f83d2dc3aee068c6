"""Addon discovery and import.

An addon is a folder inside an addons path holding ``__init__.py`` and ``__manifest__.py`` (a
Python dict literal with ``name``, ``version``, ``depends`` and ``summary``). Addons are
imported as ``devserve_addons.<name>``, a namespace whose ``__path__`` is the addons path, so
the first folder holding an addon wins, as in Odoo's ``odoo.addons``.
"""

from __future__ import annotations

import ast
import dataclasses
import graphlib
import importlib
import logging
import os
import sys
import types
from collections.abc import Container, Iterable, Mapping
from typing import Any

from devserve.errors import AppLoadError, ConfigError, exception_summary

__all__ = ["NAMESPACE", "Addon", "addon_of", "discover", "import_addons", "read_manifest"]

NAMESPACE = "devserve_addons"
MANIFEST = "__manifest__.py"

_logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Addon:
    name: str
    path: str
    manifest: Mapping[str, Any]

    @property
    def module(self) -> str:
        return f"{NAMESPACE}.{self.name}"

    @property
    def static_dir(self) -> str:
        return os.path.join(self.path, "static")

    @property
    def depends(self) -> tuple[str, ...]:
        return tuple(self.manifest.get("depends", ()))


def addon_of(module: str, names: Container[str]) -> str | None:
    """The addon among ``names`` that module ``module`` belongs to (``devserve_addons.shop.x``
    belongs to ``shop``), if any: what an addon declares counts only while it is served."""
    namespace, _, rest = module.partition(".")
    name = rest.partition(".")[0]
    return name if namespace == NAMESPACE and name in names else None


def read_manifest(path: str) -> dict[str, Any]:
    """Read a manifest without running it: only a dict literal is accepted."""
    try:
        with open(path, encoding="utf-8") as file:
            manifest = ast.literal_eval(file.read())
    except (OSError, ValueError, TypeError, SyntaxError) as error:
        raise ConfigError(
            f"cannot read {path}: {exception_summary(error)}; a manifest is one dict literal"
        ) from None
    if not isinstance(manifest, dict):
        raise ConfigError(f"{path} holds a {type(manifest).__name__}, not a dict literal")
    depends = manifest.setdefault("depends", [])
    if not isinstance(depends, (list, tuple)) or not all(isinstance(d, str) for d in depends):
        raise ConfigError(f"'depends' in {path} must be a list of addon names")
    return manifest


def discover(addons_paths: Iterable[str]) -> list[Addon]:
    """Every addon in the addons paths, in dependency order (dependencies first)."""
    found: dict[str, Addon] = {}
    for root in addons_paths:
        for name in sorted(os.listdir(root)):
            folder = os.path.join(root, name)
            if not (
                os.path.isfile(os.path.join(folder, "__init__.py"))
                and os.path.isfile(os.path.join(folder, MANIFEST))
            ):
                continue
            if not name.isidentifier():
                raise ConfigError(f"addon folder {folder!r} must be named like a Python package")
            if name in found:
                _logger.warning(
                    "addon %r in %s is ignored: %s comes first in the addons path",
                    name,
                    root,
                    found[name].path,
                )
                continue
            found[name] = Addon(name, folder, read_manifest(os.path.join(folder, MANIFEST)))
    if not found:
        listed = ", ".join(addons_paths)
        raise ConfigError(
            f"no addon found in {listed}: an addon is a sub-folder with __init__.py and {MANIFEST}"
        )
    return _dependency_order(found)


def _dependency_order(addons: dict[str, Addon]) -> list[Addon]:
    for addon in addons.values():
        missing = [name for name in addon.depends if name not in addons]
        if missing:
            raise ConfigError(
                f"addon {addon.name!r} depends on {', '.join(map(repr, missing))}, "
                "which is not in the addons path"
            )
    sorter = graphlib.TopologicalSorter({a.name: sorted(a.depends) for a in addons.values()})
    try:
        return [addons[name] for name in sorter.static_order()]
    except graphlib.CycleError as error:
        cycle = " -> ".join(error.args[1])
        raise ConfigError(f"addons depend on each other in a cycle: {cycle}") from None


def import_addons(addons: list[Addon], addons_paths: Iterable[str]) -> list[types.ModuleType]:
    namespace = sys.modules.get(NAMESPACE)
    if namespace is None:
        namespace = types.ModuleType(NAMESPACE, "Namespace of the addons devserve serves.")
        sys.modules[NAMESPACE] = namespace
    namespace.__path__ = list(addons_paths)
    modules = []
    for addon in addons:
        try:
            modules.append(importlib.import_module(addon.module))
        except Exception as error:
            raise AppLoadError(
                f"addon {addon.name!r} failed to import: {exception_summary(error)}"
            ) from error
    return modules
