"""A client of live reload's event stream (``/__devserve__/events``) for the tests and
benchmarks: a raw loopback socket, read against deadlines."""

from __future__ import annotations

import json
import socket
import time
from typing import Any

EVENTS_PATH = "/__devserve__/events"


class EventStream:
    """One open ``GET /__devserve__/events``: its response head, then its events."""

    def __init__(
        self, port: int, host: str = "127.0.0.1", headers: dict[str, str] | None = None
    ) -> None:
        self.sock = socket.create_connection((host, port), timeout=10)
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        request = f"GET {EVENTS_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n"
        self.sock.sendall(request.encode())
        self.buffer = b""
        self.closed = False
        head = self._read_until(b"\r\n\r\n", time.monotonic() + 10)
        self.status_line, *lines = head.decode("latin-1").split("\r\n")
        self.headers = {
            name.strip().lower(): value.strip()
            for name, _, value in (line.partition(":") for line in lines if line)
        }

    @property
    def status(self) -> int:
        return int(self.status_line.split()[1])

    def _read_until(self, mark: bytes, deadline: float) -> bytes:
        while mark not in self.buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {mark!r} in {self.buffer[-200:]!r}")
            self.sock.settimeout(remaining)
            data = self.sock.recv(65536)
            if not data:
                self.closed = True
                raise EOFError(f"the stream ended; unread: {self.buffer[-200:]!r}")
            self.buffer += data
        found, _, self.buffer = self.buffer.partition(mark)
        return found

    def next(self, timeout: float = 10.0) -> tuple[str, dict[str, Any]]:
        """The next event: its name and its data."""
        block = self._read_until(b"\n\n", time.monotonic() + timeout).decode()
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        return fields.get("event", "message"), json.loads(fields.get("data", "null"))

    def expect(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next event, which must be ``name``."""
        got, data = self.next(timeout)
        assert got == name, f"expected {name!r}, got {got!r} {data!r}"
        return data

    def ends_within(self, timeout: float) -> bool:
        """Whether the server closes the stream within ``timeout`` (events meanwhile are
        read and dropped)."""
        return self.events_to_the_end(timeout) is not None

    def events_to_the_end(self, timeout: float) -> list[str] | None:
        """The names of the events until the server closes the stream, or None if it is
        still open after ``timeout``."""
        deadline = time.monotonic() + timeout
        names = []
        try:
            while True:
                block = self._read_until(b"\n\n", deadline).decode()
                names.append(block.partition("event: ")[2].partition("\n")[0])
        except EOFError:
            return names
        except TimeoutError:
            return None
        except OSError:  # reset: ended too
            return names

    def close(self) -> None:
        self.sock.close()
