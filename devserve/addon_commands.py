"""Addon commands: ``<addon>/cli/<name>.py`` files defining a ``devserve.cli.Command``
subclass become ``devserve <name>``.

They are found and described without running any addon code: each file is parsed (``ast``)
for a class statement that derives from ``Command`` and is named like the file (its lowercased
class name, or ``name = "..."``); the first line of its docstring is its summary. Only running
the command executes the file, loaded from its path as a standalone module: the addon's
package (its ``__init__.py``) is never imported for it.
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import importlib.util
import os
import sys
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from devserve import addons
from devserve.errors import AppLoadError, ConfigError, DevserveError, exception_summary

__all__ = ["AddonCommand", "Found", "addons_path_options", "find", "load"]

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class AddonCommand:
    name: str
    path: str
    addon: str
    summary: str


@dataclasses.dataclass
class Found:
    """The addon commands, by name, and what kept others out (each a one-line error)."""

    commands: dict[str, AddonCommand] = dataclasses.field(default_factory=dict)
    problems: list[DevserveError] = dataclasses.field(default_factory=list)


def _derives_from_command(node: ast.ClassDef) -> bool:
    return any(
        (isinstance(base, ast.Name) and base.id == "Command")
        or (isinstance(base, ast.Attribute) and base.attr == "Command")
        for base in node.bases
    )


def _command_name(node: ast.ClassDef) -> str:
    """``name = "..."`` in the class body, else the lowercased class name (as
    ``Command.__init_subclass__`` decides)."""
    for statement in node.body:
        target: ast.expr | None = None
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target = statement.targets[0]
        elif isinstance(statement, ast.AnnAssign):
            target = statement.target
        value = getattr(statement, "value", None)
        if (
            isinstance(target, ast.Name)
            and target.id == "name"
            and isinstance(value, ast.Constant)
            and isinstance(value.value, str)
        ):
            return value.value
    return node.name.lower()


def describe(path: str, addon: str) -> AddonCommand | None:
    """The command a file declares, read without running it; None for a file that declares
    no Command subclass (a helper module). Raises AppLoadError when the file does not parse
    and ConfigError when its command is not named like the file."""
    expected = os.path.splitext(os.path.basename(path))[0]
    try:
        with open(path, "rb") as file:
            tree = ast.parse(file.read(), path)
    except (OSError, SyntaxError, ValueError) as error:
        raise AppLoadError(f"cannot read command file {path}: {exception_summary(error)}") from (
            None
        )
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and _derives_from_command(n)]
    names = {_command_name(node): node for node in classes}
    if not classes:
        return None
    if expected not in names:
        declared = ", ".join(map(repr, names))
        raise ConfigError(
            f"{path} declares command {declared}, not {expected!r}: a command file is named "
            f"like its command (rename the file, or set name = {expected!r} in the class)"
        )
    docstring = ast.get_docstring(names[expected]) or ""
    summary = docstring.strip().splitlines()[0] if docstring.strip() else ""
    return AddonCommand(expected, path, addon, summary)


def find(
    addons_paths: Iterable[str], reserved: Mapping[str, str], only: str | None = None
) -> Found:
    """Every addon command in the addons paths (or only the one named ``only``). A command
    named like one of ``reserved`` (name -> the file defining it) or declared by two addons
    is a problem naming both files; the first declaration is kept."""
    found = Found()
    pattern = f"{glob.escape(only)}.py" if only else "*.py"
    for addon, folder in addons.addon_folders(addons_paths).items():
        for path in sorted(glob.glob(os.path.join(glob.escape(folder), "cli", pattern))):
            if os.path.basename(path).startswith("_") or not os.path.isfile(path):
                continue  # __init__.py and private helpers
            try:
                command = describe(path, addon)
            except DevserveError as error:
                found.problems.append(error)
                continue
            if command is None:
                continue
            if command.name in reserved:
                found.problems.append(
                    ConfigError(
                        f"{path} declares command {command.name!r}, which devserve defines "
                        f"({reserved[command.name]}); rename the file and its command"
                    )
                )
            elif command.name in found.commands:
                first = found.commands[command.name].path
                found.problems.append(
                    ConfigError(
                        f"command {command.name!r} is declared twice, in {first} and {path}; "
                        "rename one of them"
                    )
                )
            else:
                found.commands[command.name] = command
    return found


def addons_path_options(words: list[str]) -> list[str]:
    """The ``--addons-path`` options among a command's own words (``-c`` is left alone
    there: a command may use it for something else)."""
    found: list[str] = []
    for index, word in enumerate(words):
        if word == "--addons-path":
            found += words[index : index + 2]
        elif word.startswith("--addons-path="):
            found.append(word)
    return found


def load(command: AddonCommand, base: type[T]) -> type[T]:
    """Execute the command's file as a module of its own and return its ``base`` subclass."""
    module_name = f"_devserve_command_{command.addon}_{command.name}"
    spec = importlib.util.spec_from_file_location(module_name, command.path)
    if spec is None or spec.loader is None:  # pragma: no cover (a .py path always has one)
        raise AppLoadError(f"cannot load command file {command.path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses, pickle and the like look it up there
    try:
        spec.loader.exec_module(module)
    except Exception as error:
        del sys.modules[module_name]
        raise AppLoadError(
            f"command file {command.path} failed to load: {exception_summary(error)}"
        ) from error
    for value in vars(module).values():
        if _is_command_class(value, base, module_name, command.name):
            return value  # type: ignore[no-any-return]
    del sys.modules[module_name]
    raise AppLoadError(
        f"{command.path} defines no {base.__name__} subclass named {command.name!r} when run; "
        "declare the class at the top level of the file"
    )


def _is_command_class(value: Any, base: type, module_name: str, name: str) -> bool:
    return (
        isinstance(value, type)
        and issubclass(value, base)
        and value.__module__ == module_name
        and getattr(value, "name", None) == name
    )
