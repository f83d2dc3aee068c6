"""The threaded server's request threads: a pool of non-daemon threads that serve
connections whose request has arrived (:class:`RequestPool`), and the unit of work the
control loop and the pool pass each other (:class:`HeldConnection`).

Handing a connection to an idle thread does not make the control loop wait, as starting a
thread does; a thread with no work for a while retires; ``--max-http-threads`` (or what
``--limit-memory-hard`` leaves room for, :func:`default_thread_cap`) caps them, and a
connection beyond waits in the loop, holding no thread.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from devserve._engine.connection import HTTPConnection
from devserve._engine.wire import RequestInfo, close_connection

__all__ = [
    "HeldConnection",
    "OutOfThreads",
    "RequestPool",
    "RequestThread",
    "default_thread_cap",
]

_logger = logging.getLogger("devserve.servers")

IDLE_THREAD_TIMEOUT = 30.0  # a pooled request thread with no work for this long retires
THREAD_STACK = 2 << 20  # bytes of stack a request thread reserves (the system's: 8 MiB)
MIN_THREADS = 8
ADDRESS_SPACE_HEADROOM = 256  # MiB of --limit-memory-hard kept for the app's allocations


class OutOfThreads(Exception):
    """The system refused a new request thread."""


class RequestThread(threading.Thread):
    """A pooled thread serving one connection at a time. Non-daemon: a stop lets it finish
    its request. Between connections it waits for the next one, and retires when none has
    come for a while."""

    kind = "request"

    def __init__(self, work: Callable[[RequestThread], None], number: int) -> None:
        super().__init__(target=work, args=(self,), name=f"devserve.request.{number}")
        self.jobs: queue.SimpleQueue[HeldConnection | None] = queue.SimpleQueue()
        self.connection: socket.socket | None = None  # None while idle in the pool
        self.request: RequestInfo | None = None


class RequestPool:
    """Threads that serve connections whose request has arrived. Handing a connection to
    an idle thread does not make the control loop wait, as starting a thread does."""

    def __init__(
        self,
        serve: Callable[[HeldConnection], bool],
        on_done: Callable[[HeldConnection, bool], None],
        size: int | None,
        on_idle: Callable[[], None] = lambda: None,
    ) -> None:
        self.serve = serve  # serves a connection's requests; True: keep it open
        self.on_done = on_done  # (connection, keep), from the thread that served it
        self.on_idle = on_idle  # then, once the thread is back in the pool
        self._slots = threading.BoundedSemaphore(size) if size else None
        self._threads: set[RequestThread] = set()  # busy and idle
        self._idle: list[RequestThread] = []  # most recently used last
        self._lock = threading.Lock()
        self._count = 0

    def try_serve(self, held: HeldConnection) -> bool:
        """Serve the connection on a pooled thread; False when --max-http-threads are busy.
        OutOfThreads when the system refuses a new thread (RLIMIT_AS, a process cap)."""
        if self._slots is not None and not self._slots.acquire(blocking=False):
            return False
        with self._lock:
            thread = self._idle.pop() if self._idle else None
            new = thread is None
            if thread is None:
                self._count += 1
                thread = RequestThread(self._work, self._count)
                self._threads.add(thread)
            thread.connection = held.connection
        thread.jobs.put(held)
        if new:
            try:
                thread.start()
            except Exception as error:  # "can't start new thread", MemoryError...
                with self._lock:
                    self._threads.discard(thread)
                if self._slots is not None:
                    self._slots.release()
                raise OutOfThreads(str(error)) from None
        return True

    def _work(self, thread: RequestThread) -> None:
        while True:
            try:
                job = thread.jobs.get(timeout=IDLE_THREAD_TIMEOUT)
            except queue.Empty:
                with self._lock:
                    if thread in self._idle:  # nobody picked it meanwhile: retire
                        self._idle.remove(thread)
                        self._threads.discard(thread)
                        return
                job = thread.jobs.get()  # picked just now: the connection is coming
            if job is None:
                return
            self._serve(thread, job)

    def _serve(self, thread: RequestThread, held: HeldConnection) -> None:
        keep = False
        try:
            keep = self.serve(held)
        except BaseException:  # even SystemExit: a pooled thread must come back
            _logger.exception("unexpected error while serving %s", held.client)
        finally:
            if not keep:
                close_connection(held.connection, held.http is not None and held.http.unread)
            if self._slots is not None:
                self._slots.release()
            # Told while still counted busy: a drain waits for a kept-alive connection to
            # come back to the loop (and be handed over), not only for the thread.
            self.on_done(held, keep)
            with self._lock:
                thread.connection = None
                self._idle.append(thread)
            self.on_idle()

    def busy(self) -> list[RequestThread]:
        """The threads serving a connection right now."""
        with self._lock:
            return [thread for thread in self._threads if thread.connection is not None]

    def close(self) -> None:
        """Idle threads end (they are not daemons); busy ones end after their connection."""
        with self._lock:
            for thread in self._threads:
                thread.jobs.put(None)


@dataclasses.dataclass(eq=False)
class HeldConnection:
    """An accepted connection whose request has not reached a thread yet. The control loop
    reads its request head (a client that trickles it holds no thread)."""

    connection: socket.socket
    client: Any
    deadline: float  # time.monotonic() when it is closed if its request head is not in
    http: HTTPConnection | None = None  # once its first bytes arrived
    since: float = dataclasses.field(default_factory=time.monotonic)  # held since then
    body_since: float = 0.0  # its body began to be received by the loop then
    body_bytes: int = 0  # of it, received by the loop

    def received(self) -> bytes:
        """What was read of its request so far, which the next image must see too."""
        return self.http.received if self.http is not None else b""


def default_thread_cap(memory_hard_mib: int) -> int | None:
    """How many request threads fit in the address space --limit-memory-hard leaves
    (each reserves THREAD_STACK): beyond that, starting one would fail, so connections
    wait their turn in the loop instead. No limit: no cap."""
    if not memory_hard_mib:
        return None
    from devserve import limits

    used = limits.address_space_mib()
    spare = memory_hard_mib - used - ADDRESS_SPACE_HEADROOM
    return max(MIN_THREADS, int(spare * limits.MIB) // THREAD_STACK)
