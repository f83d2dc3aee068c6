"""Memoization with statistics, for ``kill -USR1 <pid>`` reports.

``@cached`` (on functions and methods, optionally ``maxsize``) memoizes by arguments and
counts, per function: hits, misses, errors (unhashable arguments: counted, and the call
passes through), time spent computing misses, and entries. :func:`all_caches` also finds the
``functools.lru_cache`` / ``functools.cache`` wrappers of the app's modules, so existing code
gets statistics with no change.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import os
import sys
import threading
import time
import typing
import weakref
from collections.abc import Callable, Hashable, Iterable, Iterator
from typing import Any, Generic, ParamSpec, TypeVar

__all__ = ["CacheStats", "all_caches", "cached", "clear_caches", "estimate_size"]

P = ParamSpec("P")
R = TypeVar("R")

_registry: weakref.WeakSet[CachedFunction[Any, Any]] = weakref.WeakSet()


@dataclasses.dataclass(frozen=True)
class CacheStats:
    """One cache's figures, as the report shows them."""

    name: str
    entries: int
    hits: int
    misses: int
    errors: int = 0
    compute_time: float = 0.0  # seconds spent computing misses (unknown for lru_cache: 0)
    values: tuple[Any, ...] = ()  # what it holds, for the size estimate
    kind: str = "cached"

    @property
    def hit_ratio(self) -> float:
        calls = self.hits + self.misses
        return self.hits / calls if calls else 0.0


class CachedFunction(Generic[P, R]):
    """The wrapper ``@cached`` puts around a function."""

    def __init__(self, function: Callable[P, R], maxsize: int | None) -> None:
        functools.update_wrapper(self, function)
        self.function = function
        self.maxsize = maxsize
        self.name = f"{function.__module__}.{function.__qualname__}"
        self._entries: collections.OrderedDict[Hashable, R] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = self.errors = 0
        self.compute_time = 0.0
        _registry.add(self)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        key: Hashable = (args, tuple(sorted(kwargs.items())))
        try:
            with self._lock:
                value = self._entries[key]
                self._entries.move_to_end(key)
                self.hits += 1
                return value
        except KeyError:
            pass
        except TypeError:  # unhashable arguments: counted, and the call goes through
            with self._lock:
                self.errors += 1
            return self.function(*args, **kwargs)
        started = time.perf_counter()
        value = self.function(*args, **kwargs)
        with self._lock:
            self.misses += 1
            self.compute_time += time.perf_counter() - started
            self._entries[key] = value
            if self.maxsize is not None and len(self._entries) > self.maxsize:
                self._entries.popitem(last=False)
        return value

    def __get__(self, instance: object, owner: type | None = None) -> Any:
        """On a class: a method whose instance is part of the key."""
        if instance is None:
            return self
        return functools.partial(self.__call__, instance)  # type: ignore[arg-type]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def stats(self, values: bool = True) -> CacheStats:
        """Its figures; ``values``: with what it holds (for the size estimate), read under
        its lock. Without, they are read as they are: the status never waits for a
        request."""
        with self._lock if values else contextlib.nullcontext():
            return CacheStats(
                self.name,
                len(self._entries),
                self.hits,
                self.misses,
                self.errors,
                self.compute_time,
                tuple(self._entries.values()) if values else (),
            )


def cached(function: Callable[P, R] | None = None, *, maxsize: int | None = None) -> Any:
    """Memoize by arguments, with statistics: ``@cached`` or ``@cached(maxsize=128)``."""
    if function is None:
        return lambda inner: CachedFunction(inner, maxsize)
    return CachedFunction(function, maxsize)


def clear_caches() -> None:
    """Empty every ``@cached`` cache (statistics are kept)."""
    for cache in list(_registry):
        cache.clear()


# The type of what functools.lru_cache and functools.cache return. Recognised by type, not
# by probing attributes: a module may hold proxies (werkzeug's LocalProxy) that raise then.
_LRU_WRAPPER: type = getattr(functools, "_lru_cache_wrapper")  # noqa: B009


def _functools_caches(modules: Iterable[Any]) -> Iterator[CacheStats]:
    """``lru_cache``/``cache`` wrappers defined at module level or on module classes. Only
    types are looked at (``type(value)``): a module's lazy object (Django's
    ``SimpleLazyObject``) is never made to evaluate, and the namespaces are copied first
    (a request thread may add to them meanwhile)."""
    seen: set[int] = set()
    for module in modules:
        namespaces = [list(vars(module).values())]
        namespaces += [list(vars(v).values()) for v in namespaces[0] if issubclass(type(v), type)]
        for namespace in namespaces:
            for value in namespace:
                if type(value) is not _LRU_WRAPPER or id(value) in seen:
                    continue
                value = typing.cast(Any, value)
                seen.add(id(value))
                figures = value.cache_info()
                name = f"{value.__module__}.{value.__qualname__}"
                yield CacheStats(
                    name, figures.currsize, figures.hits, figures.misses, kind="lru_cache"
                )


_found_modules: dict[tuple[int, tuple[str, ...]], list[Any]] = {}


def app_modules(roots: Iterable[str]) -> list[Any]:
    """The imported modules whose file lies under one of ``roots`` (looked for again only
    when modules were imported since: the status asks often)."""
    roots = tuple(roots)
    key = (len(sys.modules), roots)
    if key not in _found_modules:
        prefixes = tuple(os.path.join(os.path.realpath(root), "") for root in roots)
        found = []
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if isinstance(path, str) and os.path.realpath(path).startswith(prefixes):
                found.append(module)
        _found_modules.clear()
        _found_modules[key] = found
    return _found_modules[key]


def all_caches(roots: Iterable[str] = (), values: bool = True) -> list[CacheStats]:
    """Every ``@cached`` cache, and the functools caches of the modules under ``roots``
    (``values``: see :meth:`CachedFunction.stats`)."""
    for _ in range(3):  # a cache defined meanwhile, in another thread: look again
        try:
            registered = list(_registry)
            break
        except RuntimeError:
            continue
    else:
        registered = []
    stats = [cache.stats(values) for cache in registered]
    stats.extend(_functools_caches(app_modules(roots)))
    return sorted(stats, key=lambda item: (-item.compute_time, item.name))


def estimate_size(value: Any, stop: threading.Event | None = None, limit: int = 1_000_000) -> int:
    """Bytes a value holds, following containers (each object once, at most ``limit``
    objects; ``stop`` ends the walk early)."""
    seen: set[int] = set()
    pending = [value]
    total = 0
    while pending and len(seen) < limit and not (stop and stop.is_set()):
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        total += sys.getsizeof(item, 0)
        if isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            pending.extend(item)
        elif hasattr(item, "__dict__") and not isinstance(item, type):
            pending.append(vars(item))
    return total
