"""Prefork's scoreboard: memory the master shares with its workers (an anonymous shared
mapping made before they are forked), where each worker writes what it serves, so the
status reads every worker's request and count without asking any of them (no message per
request, no wake-up of the master).

One slot per worker number: when its request started (``time.monotonic()``, the same clock
in every process; 0 while idle), how many requests it served, and the request's method,
path and client. A slot is written by its worker alone; a read that meets a write half-way
may show a mixed request, never a wrong worker: the status is a glance, not a record.
"""

from __future__ import annotations

import mmap
import struct

from devserve._engine.wire import RequestInfo

__all__ = ["Scoreboard"]

_SLOT = struct.Struct("=dI8s200s64s")  # started, served, method, path, client
SLOTS = 512  # worker numbers 1..SLOTS have a slot (TTIN rarely goes that far)


class Scoreboard:
    """The slots of one master's workers (numbered from 1)."""

    def __init__(self, slots: int = SLOTS) -> None:
        self.slots = slots
        self._memory = mmap.mmap(-1, slots * _SLOT.size)  # shared with the forks

    def write(self, number: int, request: RequestInfo | None, served: int) -> None:
        """From worker ``number``: what it serves now (None: nothing), and its count."""
        if not 1 <= number <= self.slots:
            return
        if request is None:
            fields = (0.0, served, b"", b"", b"")
        else:
            fields = (
                request.started,
                served,
                request.method.encode("latin-1", "replace")[:8],
                request.path.encode("latin-1", "replace")[:200],
                request.client.encode("latin-1", "replace")[:64],
            )
        _SLOT.pack_into(self._memory, (number - 1) * _SLOT.size, *fields)

    def read(self, number: int) -> tuple[RequestInfo | None, int]:
        """Worker ``number``'s request (None while idle), and its count."""
        if not 1 <= number <= self.slots:
            return None, 0
        started, served, method, path, client = _SLOT.unpack_from(
            self._memory, (number - 1) * _SLOT.size
        )
        if not started:
            return None, served
        text = [part.rstrip(b"\0").decode("latin-1") for part in (method, path, client)]
        return RequestInfo(text[0], text[1], text[2], started), served

    def clear(self, number: int) -> None:
        """A new worker takes the number: nothing served yet."""
        self.write(number, None, 0)

    def close(self) -> None:
        self._memory.close()
