"""What the warm parent imports ahead of its serving children: the modules the app imported
from outside the project (the framework, site-packages, the standard library), never one
under the project's folders.

A serving child reports the modules it imported (:func:`imported_since`); the parent imports
them in the same order (:func:`preload`) under a guard (:class:`ProjectGuard`) that refuses
any module under the watched roots: a library that reads the project at import time (Django
settings read by a module's body) fails to import there and is skipped, so the parent never
holds the project's code or state, and every child forked from it loads the project afresh.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

__all__ = ["PRELOAD_BUDGET", "Preloaded", "ProjectGuard", "imported_since", "preload"]

_logger = logging.getLogger("devserve.warm")

PRELOAD_BUDGET = 20.0  # seconds: a preload that takes longer is given up (exec reloads then)
NEVER = frozenset({"__main__", "__mp_main__"})


class ProjectGuard:
    """While installed first in ``sys.meta_path`` (a meta path finder; not derived from
    ``importlib.abc``, whose import costs a child's start 5 ms): importing a module whose
    file is under ``roots`` raises ImportError (the importer, a library, fails and is
    skipped)."""

    def __init__(self, roots: Iterable[str]) -> None:
        self.roots = tuple(os.path.join(os.path.abspath(root), "") for root in roots)

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None:
            return None  # the other finders decide; what they load is checked afterwards
        if self.covers(spec.origin) or any(
            self.covers(location) for location in spec.submodule_search_locations or ()
        ):
            raise ImportError(f"{fullname} is the project's: not preloaded", name=fullname)
        return spec

    def covers(self, path: str | None) -> bool:
        return bool(path) and os.path.abspath(str(path)).startswith(self.roots)


@dataclass
class Preloaded:
    """What the parent imported so far: module names asked for (done or failed), and the
    files of every module it holds (a change to one needs a fresh image)."""

    asked: set[str] = field(default_factory=set)
    imported: int = 0
    failed: int = 0
    seconds: float = 0.0  # spent importing
    files: frozenset[str] = frozenset()
    broken: str = ""  # why warm reloads are off ("": they are on)

    def add_files(self, modules: Iterable[object]) -> None:
        """Record the files of ``modules`` (the first time: of every module held)."""
        if not self.files:
            modules = list(sys.modules.values())
        found = (_file_of(module) for module in modules)
        self.files |= {os.path.abspath(file) for file in found if file}


def imported_since(before: Iterable[str], guard: ProjectGuard) -> list[str]:
    """The modules imported since ``before`` (names) that are not the project's, in the
    order they were imported."""
    known = set(before)
    names = []
    for name, module in list(sys.modules.items()):
        if name in known or name in NEVER or module is None or not isinstance(name, str):
            continue
        if guard.covers(_file_of(module)):
            continue
        names.append(name)
    return names


def preload(
    names: Sequence[str],
    roots: Sequence[str],
    path: Sequence[str],
    done: Preloaded,
    until: float | None = None,
) -> list[str]:
    """Import ``names`` (those not asked for before) under the project guard, with ``path``
    added to ``sys.path`` meanwhile, until ``time.monotonic()`` passes ``until`` (None: all
    of them); failures are skipped. Returns the names left for later. ``done`` records the
    result; ``done.broken`` says why warm reloads must stop (the project leaked in, threads
    started, an import took over PRELOAD_BUDGET)."""
    todo = [name for name in names if name not in done.asked and name not in sys.modules]
    if not todo or done.broken:
        return []
    guard = ProjectGuard(roots)
    started = time.monotonic()
    before = set(sys.modules)
    with _guarded(guard, path), _budget(PRELOAD_BUDGET):
        try:
            while todo and (until is None or time.monotonic() < until):
                name = todo.pop(0)
                done.asked.add(name)
                if _import(name):
                    done.imported += 1
                else:
                    done.failed += 1
        except TimeoutError:
            done.broken = f"preloading took over {PRELOAD_BUDGET:g} s"
    done.seconds += time.monotonic() - started
    # Only what this call imported: the rest was looked at before (a slice at a time, the
    # whole of sys.modules would be read over and over).
    new = {name: module for name, module in list(sys.modules.items()) if name not in before}
    leaked = [name for name, module in new.items() if guard.covers(_file_of(module))]
    if leaked and not done.broken:
        done.broken = f"preloading imported the project's {leaked[0]}"
    if threading.active_count() > 1 and not done.broken:
        done.broken = "preloading started a thread (a fork would copy it half-way)"
    done.add_files(new.values())
    return [] if done.broken else todo


def _import(name: str) -> bool:
    try:
        importlib.import_module(name)
    except TimeoutError:
        raise
    except BaseException as error:  # anything a library's import may raise: skipped
        if isinstance(error, KeyboardInterrupt):
            raise
        _logger.debug("not preloaded: %s (%s)", name, error)
        return False
    return True


def _file_of(module: Any) -> str | None:
    try:
        file = vars(module).get("__file__")
    except TypeError:
        return None
    return file if isinstance(file, str) else None


@contextlib.contextmanager
def _guarded(guard: ProjectGuard, path: Sequence[str]) -> Iterator[None]:
    saved_path = list(sys.path)
    sys.path.extend(entry for entry in path if entry not in sys.path and entry)
    sys.meta_path.insert(0, guard)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(guard)
        sys.path[:] = saved_path


@contextlib.contextmanager
def _budget(seconds: float) -> Iterator[None]:
    """TimeoutError in the main thread once ``seconds`` have passed (SIGALRM)."""

    def expired(signum: int, frame: object) -> None:
        raise TimeoutError

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
