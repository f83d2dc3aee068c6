"""Addon discovery and import.

An addon is a folder inside an addons path holding ``__init__.py`` and ``__manifest__.py`` (a
Python dict literal with ``name``, ``version``, ``depends`` and ``summary``; other keys are
kept as they are). Addons are imported as ``devserve_addons.<name>``, a namespace whose
``__path__`` is the addons path, so the first folder holding an addon wins, as in Odoo's
``odoo.addons``.
"""

from __future__ import annotations

import ast
import dataclasses
import graphlib
import importlib
import logging
import os
import re
import reprlib
import sys
import types
from collections.abc import Container, Iterable, Mapping
from typing import Any

from devserve.errors import AppLoadError, ConfigError, exception_summary

__all__ = [
    "NAMESPACE",
    "Addon",
    "addon_folders",
    "addon_of",
    "discover",
    "import_addons",
    "read_manifest",
]

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


# A version is dotted numbers: "1.0", "17.0.1.2.0".
VERSION = re.compile(r"\d+(\.\d+)*")


def _defaults(folder_name: str) -> dict[str, Any]:
    """The value of each known key when the manifest leaves it out."""
    return {"name": folder_name, "version": "1.0", "summary": "", "depends": []}


def _problem(key: str, value: Any) -> str | None:
    """What is wrong with a known key's value, as "must be ..."; None when it is right."""
    if key == "depends":
        if isinstance(value, (list, tuple)) and all(isinstance(d, str) for d in value):
            return None
        return "must be a list of addon names"
    if not isinstance(value, str):
        return "must be a string"
    if key == "name" and not value.strip():
        return "must not be empty"
    if key == "version" and not VERSION.fullmatch(value):
        return "must be dotted numbers such as '1.0' or '17.0.1.2'"
    return None


def read_manifest(path: str, folder_name: str | None = None) -> dict[str, Any]:
    """Read a manifest without running it: only a dict literal is accepted. Known keys are
    checked and get their default when absent (``name``: the folder's name, ``version``:
    ``1.0``, ``summary``: empty, ``depends``: none); unknown keys are kept as they are."""
    try:
        with open(path, encoding="utf-8") as file:
            manifest = ast.literal_eval(file.read())
    except (OSError, ValueError, TypeError, SyntaxError) as error:
        raise ConfigError(
            f"cannot read {path}: {exception_summary(error)}; a manifest is one dict literal"
        ) from None
    if not isinstance(manifest, dict):
        raise ConfigError(f"{path} holds a {type(manifest).__name__}, not a dict literal")
    folder_name = folder_name or os.path.basename(os.path.dirname(os.path.abspath(path)))
    for key, default in _defaults(folder_name).items():
        value = manifest.setdefault(key, default)
        problem = _problem(key, value)
        if problem:
            raise ConfigError(f"{key!r} in {path} {problem}, not {reprlib.repr(value)}")
    manifest["depends"] = list(manifest["depends"])
    return manifest


def addon_folders(addons_paths: Iterable[str]) -> dict[str, str]:
    """Name -> folder of every addon in the addons paths, in path order. The first folder
    holding a name wins; a later one is reported (a warning naming both) and left out."""
    found: dict[str, str] = {}
    for root in dict.fromkeys(addons_paths):  # a folder given twice is no duplicate
        try:
            names = sorted(os.listdir(root))
        except OSError as error:  # gone (a reload after rm -rf), or unreadable
            raise ConfigError(
                f"cannot read addons path {root}: {error.strerror}; put the folder back, "
                "or fix its permissions"
            ) from None
        for name in names:
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
                    folder,
                    found[name],
                )
                continue
            found[name] = folder
    return found


def discover(addons_paths: Iterable[str]) -> list[Addon]:
    """Every addon in the addons paths, in dependency order (dependencies first)."""
    addons_paths = list(addons_paths)
    found = {
        name: Addon(name, folder, read_manifest(os.path.join(folder, MANIFEST), name))
        for name, folder in addon_folders(addons_paths).items()
    }
    if not found:
        listed = ", ".join(addons_paths)
        raise ConfigError(
            f"no addon found in {listed}: an addon is a sub-folder with __init__.py and {MANIFEST}"
        )
    return _dependency_order(found, addons_paths)


def _dependency_order(addons: dict[str, Addon], addons_paths: list[str]) -> list[Addon]:
    for addon in addons.values():
        missing = [name for name in addon.depends if name not in addons]
        if missing:
            raise ConfigError(
                f"addon {addon.name!r} depends on {', '.join(map(repr, missing))}, "
                f"which is not in the addons path ({', '.join(addons_paths)}); add the folder "
                "holding it to --addons-path"
            )
    sorter = graphlib.TopologicalSorter({a.name: sorted(a.depends) for a in addons.values()})
    try:
        return [addons[name] for name in sorter.static_order()]
    except graphlib.CycleError as error:
        cycle = " -> ".join(error.args[1])
        raise ConfigError(
            f"addons depend on each other in a cycle: {cycle}; drop one of these dependencies"
        ) from None


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
