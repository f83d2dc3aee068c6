"""The resource limits' building blocks, on this very process (each in a child process where
the limit would stay)."""

from __future__ import annotations

import multiprocessing
import resource
import signal
import time

from devserve import config, limits


def test_limits_follow_the_settings_and_a_debugger_turns_the_time_limits_off() -> None:
    settings = config.Settings(limit_time_cpu=7, limit_time_real=9, limit_memory_soft=100)
    assert limits.Limits.from_settings(settings) == limits.Limits(65536, 100, 2560, 7, 9)
    debugging = limits.Limits.from_settings(settings, debugging=True)
    assert (debugging.time_cpu, debugging.time_real, debugging.memory_soft) == (0, 0, 100)


def test_memory_over_the_soft_limit() -> None:
    resident = limits.resident_mib()
    assert 5 < resident < 10_000
    assert limits.Limits(memory_soft=int(resident) + 500).over_memory_soft() is None
    over = limits.Limits(memory_soft=1).over_memory_soft()
    assert over is not None and over > 1
    assert limits.Limits(memory_soft=0).over_memory_soft() is None  # no limit


def _in_child(target: object) -> int:
    context = multiprocessing.get_context("fork")
    child = context.Process(target=target)
    child.start()
    child.join(20)
    assert child.exitcode is not None, "the child hung"
    return child.exitcode


def _allocate_past_the_hard_limit() -> None:
    limits.set_memory_hard(300)
    assert resource.getrlimit(resource.RLIMIT_AS)[0] == 300 * limits.MIB
    try:
        bytearray(400 * limits.MIB)
    except MemoryError:
        raise SystemExit(3) from None
    raise SystemExit(0)


def test_hard_memory_limit_makes_a_big_allocation_fail_in_the_process() -> None:
    assert _in_child(_allocate_past_the_hard_limit) == 3


def _spin_past_the_cpu_limit() -> None:
    signal.signal(signal.SIGXCPU, lambda *_: (_ for _ in ()).throw(SystemExit(4)))
    limits.arm_cpu_limit(1)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        pass
    raise SystemExit(0)


def test_cpu_limit_sends_sigxcpu_after_the_cpu_seconds() -> None:
    assert _in_child(_spin_past_the_cpu_limit) == 4


def test_zero_means_no_cpu_limit() -> None:
    before = resource.getrlimit(resource.RLIMIT_CPU)
    limits.arm_cpu_limit(0)
    assert resource.getrlimit(resource.RLIMIT_CPU) == before
