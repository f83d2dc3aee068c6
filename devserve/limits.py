"""Resource limits, Odoo's way: memory through RLIMIT_AS and resident size, CPU through
RLIMIT_CPU re-armed per request. The real-time limit is watched by whoever supervises the
request (the prefork master, or the threaded server's control loop)."""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import logging
import os
import resource
from typing import Any

__all__ = [
    "Limits",
    "address_space_mib",
    "arm_cpu_limit",
    "cap_malloc_arenas",
    "cpu_seconds",
    "raise_open_files",
    "resident_mib",
    "set_memory_hard",
]

_logger = logging.getLogger(__name__)

MIB = 1024 * 1024
OPEN_FILES = 65536  # the descriptor limit devserve raises its own to, when it may
M_ARENA_MAX = -8  # glibc's mallopt() parameter
MALLOC_ARENAS = 2


@dataclasses.dataclass(frozen=True)
class Limits:
    """The limits of a run (0: no limit), from the settings of the same names."""

    request: int = 0
    memory_soft: int = 0  # MiB resident
    memory_hard: int = 0  # MiB of address space
    time_cpu: float = 0.0  # seconds per request
    time_real: float = 0.0  # seconds per request

    @classmethod
    def from_settings(cls, settings: Any, debugging: bool = False) -> Limits:
        """With a debugger holding requests (post-mortem), the time limits are off."""
        return cls(
            request=settings.limit_request,
            memory_soft=settings.limit_memory_soft,
            memory_hard=settings.limit_memory_hard,
            time_cpu=0.0 if debugging else settings.limit_time_cpu,
            time_real=0.0 if debugging else settings.limit_time_real,
        )

    def over_memory_soft(self) -> float | None:
        """The resident size in MiB when above the soft limit, else None."""
        if not self.memory_soft:
            return None
        # The peak is one system call away and bounds the current size: read that (a file
        # under /proc) only once the peak has passed the limit. This runs per request.
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        if peak_mib <= self.memory_soft:
            return None
        size = resident_mib()
        return size if size > self.memory_soft else None


def set_memory_hard(mebibytes: int) -> None:
    """Cap this process's address space: an allocation beyond it fails (MemoryError) in the
    process instead of pushing the machine into swap. glibc gives each thread that allocates
    its own 64 MiB malloc arena (in address space, not memory); capping them keeps a healthy
    multi-threaded process far from the limit, as Odoo does."""
    if not mebibytes:
        return
    cap_malloc_arenas()
    limit = mebibytes * MIB
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY and limit > hard:
        limit = hard
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def raise_open_files() -> None:
    """The descriptor limit to its maximum (as servers do): the soft default, often 1024,
    would cap the connections a server holds far below what the system allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Bounded: a hard limit of a million would be inherited by every child of the app.
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def cap_malloc_arenas() -> None:
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to cap
        ctypes.CDLL(None).mallopt(M_ARENA_MAX, MALLOC_ARENAS)  # the process's own libc


def address_space_mib() -> float:
    """This process's address space (what RLIMIT_AS counts), in MiB."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            pages = int(statm.read().split()[0])
        return pages * resource.getpagesize() / MIB
    except (OSError, ValueError, IndexError):
        import psutil

        return float(psutil.Process().memory_info().vms) / MIB


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


_armed: dict[int, int] = {}  # pid -> the soft RLIMIT_CPU it set last (forks inherit this)


def arm_cpu_limit(seconds: float) -> None:
    """SIGXCPU once this process has used ``seconds`` more CPU time than now. RLIMIT_CPU
    counts whole seconds: most requests find the limit already where it should be."""
    if not seconds:
        return
    limit = int(cpu_seconds() + seconds) + 1  # whole seconds; never below what is used
    pid = os.getpid()
    if _armed.get(pid) == limit:
        return
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    resource.setrlimit(
        resource.RLIMIT_CPU, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard)
    )
    _armed.clear()
    _armed[pid] = limit


_process: Any = None  # psutil's view of this process, made once (per process: forks)


def resident_mib() -> float:
    global _process
    import psutil

    if _process is None or _process.pid != os.getpid():
        _process = psutil.Process()
    return float(_process.memory_info().rss) / MIB
