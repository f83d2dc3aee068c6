from __future__ import annotations

import functools
import logging
import sys
import threading
import types
from pathlib import Path

import pytest
from werkzeug.local import LocalProxy

from devserve import cache, log
from devserve.cache import cached


def test_hits_misses_entries_and_compute_time() -> None:
    calls: list[int] = []

    @cached
    def double(number: int) -> int:
        calls.append(number)
        return number * 2

    assert [double(2), double(2), double(3), double(number=2)] == [4, 4, 6, 4]
    stats = double.stats()
    assert (stats.entries, stats.hits, stats.misses, stats.errors) == (3, 1, 3, 0)
    assert calls == [2, 3, 2]  # keyword and positional calls are different keys
    assert stats.compute_time >= 0 and stats.hit_ratio == 0.25


def test_unhashable_arguments_are_counted_and_pass_through() -> None:
    @cached
    def first(items: list[int]) -> int:
        return items[0]

    assert first([5, 6]) == 5
    assert first([5, 6]) == 5
    stats = first.stats()
    assert (stats.errors, stats.hits, stats.misses, stats.entries) == (2, 0, 0, 0)


def test_maxsize_evicts_the_least_recently_used() -> None:
    @cached(maxsize=2)
    def ident(number: int) -> int:
        return number

    ident(1), ident(2), ident(1), ident(3)  # 2 is the least recently used: evicted
    assert ident.stats().entries == 2
    ident(1)
    assert ident.stats().hits == 2  # 1 is still there
    ident(2)
    assert ident.stats().misses == 4  # 2 was not


def test_methods_key_on_the_instance() -> None:
    class Counter:
        def __init__(self, base: int) -> None:
            self.base = base

        @cached
        def plus(self, number: int) -> int:
            return self.base + number

    one, ten = Counter(1), Counter(10)
    assert (one.plus(1), ten.plus(1), one.plus(1)) == (2, 11, 2)
    stats = Counter.plus.stats()
    assert (stats.hits, stats.misses) == (1, 2)


def test_clear_caches_empties_every_cache() -> None:
    @cached
    def square(number: int) -> int:
        return number * number

    square(4)
    cache.clear_caches()
    assert square.stats().entries == 0
    assert square.stats().misses == 1  # statistics are kept


def test_all_caches_finds_lru_caches_of_app_modules_despite_raising_proxies() -> None:
    module = types.ModuleType("fake_app")

    @functools.lru_cache(maxsize=8)
    def cube(number: int) -> int:
        return number**3

    def no_request() -> object:
        raise RuntimeError("only while serving a request")

    cube.__module__ = "fake_app"
    module.cube = cube  # type: ignore[attr-defined]
    module.request = LocalProxy(no_request)  # type: ignore[attr-defined]
    cube(2), cube(2)
    [found] = list(cache._functools_caches([module]))
    assert (found.name, found.entries, found.hits, found.misses, found.kind) == (
        "fake_app.test_all_caches_finds_lru_caches_of_app_modules_despite_raising_proxies"
        ".<locals>.cube",
        1,
        1,
        1,
        "lru_cache",
    )


def test_estimate_size_follows_containers_and_stops_when_asked() -> None:
    small = cache.estimate_size(["x"])
    big = cache.estimate_size(["x" * 10_000, {"k": list(range(100))}])
    assert big > small + 10_000
    stop = threading.Event()
    stop.set()
    assert cache.estimate_size(["x" * 10_000], stop) == 0


def test_plain_table_is_aligned(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="devserve"):
        log.print_table("title", ["name", "hits"], [["a.long.name", "3"], ["b", "12"]])
    assert caplog.records[-1].getMessage().splitlines() == [
        "title",
        "name         hits",
        "a.long.name     3",
        "b              12",
    ]


def test_the_figures_never_evaluate_a_lazy_object_of_a_module(tmp_path: Path) -> None:
    """The status reads them often, from the control loop: a module's lazy object (as
    Django's SimpleLazyObject, whose ``__class__`` evaluates it) is left alone."""

    class Lazy:
        @property  # type: ignore[misc]
        def __class__(self) -> type:
            raise AssertionError("evaluated")

    module = types.ModuleType("lazymod")
    module.__file__ = str(tmp_path / "lazymod.py")
    module.setting = Lazy()  # type: ignore[attr-defined]
    module.helper = functools.lru_cache(lambda x: x)  # type: ignore[attr-defined]
    sys.modules["lazymod"] = module
    try:
        names = [item.name for item in cache.all_caches([str(tmp_path)], values=False)]
    finally:
        del sys.modules["lazymod"]
    assert any(name.endswith("<lambda>") for name in names)
