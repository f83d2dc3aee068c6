"""devserve's own routes, under ``/__devserve__/``: answered by the control loop, never by the
app, and only to clients on this machine.

``GET /__devserve__/status`` answers what the server is doing, as JSON (the composition root
hands the function that makes it: :mod:`devserve.status`), written from here without a
thread, so it answers while every request thread is busy.

``GET /__devserve__/events`` is live reload's event stream (Server-Sent Events). A connection
that asks for it is taken from whoever read its request (a request thread, a greenlet, a
prefork worker, which passes the descriptor to its master) and given to the control loop
(:meth:`DevRoutes.take`): an open stream holds no thread, a drain never waits for it, and it
is closed when the server stops accepting (a reload, a stop). The page asks for itself again
(told ``reload``), or reconnects by itself; either request waits in the listen backlog for
the next image, whose ``hello`` names new code. A prefork master's streams come from its
workers over a socket pair kept across reloads, so the previous code's workers, which serve
on through a reload, pass theirs to the next master; it holds their greeting (``hold()``)
until those workers take no more requests.

The events, each one line of JSON: ``hello {"image", "changes"}`` on connect (``changes``:
how many ``css`` and ``reload`` this image sent, for a page that was not listening), then
``error {"file", "line", "message", "source"}``, ``css {"path"}`` and ``reload {}`` (or
``{"paths"}``: static files to fetch anew) as they happen; ``reload`` also when the server
reloads, just before the streams close (not in prefork, whose old workers serve on). An
error stands: every stream that connects later gets it after its ``hello``, until new code
serves.

Any other client (another machine, or anyone through a proxy, even one on this machine), or
any other path, is the app's to answer (:func:`claims`): whoever reads requests checks here
first.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import secrets
import selectors
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "EVENTS",
    "STATUS",
    "DevRoutes",
    "Stream",
    "claims",
    "forwarded",
    "is_loopback_client",
    "new_image",
]

_logger = logging.getLogger("devserve.access")

PREFIX = "/__devserve__/"
EVENTS = PREFIX + "events"
STATUS = PREFIX + "status"
MAX_PENDING = 64 << 10  # bytes a stream may owe its client; past it, the client is dropped
EVENT_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-store\r\n"
    b"X-Accel-Buffering: no\r\n"
    b"Connection: close\r\n\r\n"
)


def new_image() -> str:
    """An id for the code a process serves (live reload's, the status'): never the same
    twice."""
    return f"{os.getpid():x}-{secrets.token_hex(4)}"


def is_loopback_client(host: str) -> bool:
    """Whether a peer address is this machine's (IPv4, IPv6, and IPv4 mapped in IPv6). The
    socket's peer only: no header (``X-Forwarded-For``) ever counts."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool((mapped or address).is_loopback)


# Headers a proxy adds: a request carrying one came through a proxy (on this machine too,
# whose peer address is loopback), for someone who may be anywhere.
FORWARDING = frozenset({b"forwarded", b"x-forwarded-for", b"x-forwarded-host", b"x-real-ip"})


def claims(
    method: str,
    target: str,
    client_host: str,
    paths: frozenset[str],
    headers: Iterable[tuple[bytes, bytes]] = (),
) -> bool:
    """Whether the control loop answers this request: a GET of one of its ``paths``, from
    this machine (its socket's peer), not through a proxy. Anything else goes to the app,
    as if devserve had no such path."""
    if method != "GET" or not paths or target.split("?", 1)[0] not in paths:
        return False
    return is_loopback_client(client_host) and not forwarded(headers)


def forwarded(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """Whether a request came through a proxy (its headers, names in lower case)."""
    return any(name.lower() in FORWARDING for name, _value in headers)


def event(name: str, data: dict[str, Any]) -> bytes:
    """One Server-Sent Event: its name, and its data as one line of JSON."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


class Stream:
    """An open event stream: its descriptor, and what it still owes its client."""

    def __init__(self, fd: int, answer: bool = False) -> None:
        self.fd = fd
        self.pending = b""
        self.greeted = False  # told its hello (events go to greeted streams only)
        self.answer = answer  # one answer (the status), closed once it is sent


class DevRoutes:
    """The open event streams of one control loop, registered in its selector.

    Only the loop's thread calls it: the streams are taken through the loop's events, and
    the events sent are decided by the loop (a batch of changes)."""

    def __init__(
        self,
        image: str,
        error: dict[str, Any] | None = None,
        events: bool = True,
        status: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.image = image  # the code serving: a new one with every image and serving child
        self.error = error  # the standing error (a failed load, a refused change), if any
        self.events = events  # live reload's event streams
        self.status = status  # what GET /__devserve__/status answers, if it is served
        self._streams: dict[int, Stream] = {}
        self._selector: selectors.BaseSelector | None = None
        self._open = True
        self.holding = False  # greetings wait (see hold())
        self.changes = 0  # css and reload events sent: a page back in view compares

    @property
    def open_streams(self) -> int:
        """How many event streams are open (answers being written are not counted)."""
        return len([stream for stream in self._streams.values() if not stream.answer])

    @property
    def paths(self) -> frozenset[str]:
        """The paths answered here (fixed once the server is made: connections read them)."""
        paths = {EVENTS} if self.events else set()
        return frozenset(paths | ({STATUS} if self.status is not None else set()))

    def attach(self, selector: selectors.BaseSelector) -> None:
        """The control loop's selector, where the streams wait."""
        self._selector = selector

    def take(self, fd: int, target: str) -> None:
        """A connection whose request is ``GET target`` (claimed): answered from here on."""
        path = target.split("?", 1)[0]
        if not self._open or self._selector is None or path not in self.paths:
            os.close(fd)  # stopping or reloading: the client comes back to the next image
            return
        os.set_blocking(fd, False)
        os.set_inheritable(fd, False)  # passed by a prefork worker: not for a next exec
        stream = Stream(fd, answer=path == STATUS)
        self._streams[fd] = stream
        self._selector.register(fd, selectors.EVENT_READ, stream)
        if stream.answer:
            self._write(stream, self._status_response())
        elif not self.holding:
            self._greet(stream)
            _logger.debug("event stream %d opened (%d open)", fd, self.open_streams)

    def _status_response(self) -> bytes:
        """The status as a whole JSON response; what went wrong, if it could not be made."""
        assert self.status is not None
        code, reason = 200, b"OK"
        try:
            body = json.dumps(self.status(), indent=1).encode()
        except Exception as error:  # the loop goes on: the asker is told why
            _logger.exception("the status could not be made")
            code, reason = 500, b"Internal Server Error"
            body = json.dumps({"error": f"{type(error).__name__}: {error}"}).encode()
        head = (
            b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            b"Cache-Control: no-store\r\nConnection: close\r\n\r\n" % (code, reason, len(body))
        )
        return head + body

    def hold(self) -> None:
        """Streams are taken but not greeted until :meth:`release`: a prefork master whose
        previous code's workers still serve must not say "new code" to a page yet, or the
        page would reload into the old code."""
        self.holding = True

    def release(self) -> None:
        """Greet the streams held: the new code serves every request from now on."""
        self.holding = False
        for stream in list(self._streams.values()):
            if not stream.greeted and not stream.answer:
                self._greet(stream)

    def _greet(self, stream: Stream) -> None:
        stream.greeted = True
        hello = {"image": self.image, "changes": self.changes}
        greeting = EVENT_STREAM_HEAD + event("hello", hello)
        if self.error is not None:
            greeting += event("error", self.error)
        self._write(stream, greeting)

    def send(self, name: str, data: dict[str, Any]) -> None:
        """An event to every open stream; an error also to those that connect later."""
        if name == "error":
            self.error = data
        elif name in ("css", "reload"):
            self.changes += 1
        self._broadcast(event(name, data))

    def _broadcast(self, message: bytes) -> None:
        """To every greeted stream (an answer, the status, is never greeted)."""
        for stream in list(self._streams.values()):
            if stream.greeted:
                self._write(stream, message)

    def ready(self, stream: Stream, mask: int) -> None:
        """The selector says the client sent something (or left), or can take more."""
        if mask & selectors.EVENT_READ:
            try:
                data = os.read(stream.fd, 4096)
            except BlockingIOError:
                data = b"-"
            except OSError:
                data = b""
            if not data:  # the browser left (a page closed, a navigation)
                self._close(stream)
                return
        if mask & selectors.EVENT_WRITE and stream.fd in self._streams:
            self._write(stream, b"")

    def close_all(self, reloading: bool = False) -> None:
        """The server stops accepting: every stream ends, and none opens from now on. For
        a reload, each is told ``reload`` first: the page asks for itself again at once,
        and its request waits in the listen backlog for the new code (sooner than a
        reconnect, then a ``hello``, then the page's request)."""
        if reloading:
            self._broadcast(event("reload", {}))
        self._open = False
        for stream in list(self._streams.values()):
            self._close(stream)

    def forget(self) -> None:
        """In a process forked from the loop's (a prefork worker): the streams are the
        loop's; this copy of their descriptors must not keep them open."""
        for fd in self._streams:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._streams.clear()
        self._selector = None
        self._open = False

    def _write(self, stream: Stream, data: bytes) -> None:
        out = stream.pending + data
        try:
            sent = os.write(stream.fd, out) if out else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            self._close(stream)
            return
        stream.pending = out[sent:]
        if (stream.answer and not stream.pending) or (
            len(stream.pending) > MAX_PENDING and not stream.answer  # a client that does not read
        ):
            self._close(stream)
            return
        assert self._selector is not None
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if stream.pending else 0)
        if self._selector.get_key(stream.fd).events != wanted:
            self._selector.modify(stream.fd, wanted, stream)

    def _close(self, stream: Stream) -> None:
        self._streams.pop(stream.fd, None)
        if self._selector is not None:
            with contextlib.suppress(KeyError, ValueError, OSError):
                self._selector.unregister(stream.fd)
        with contextlib.suppress(OSError):
            os.close(stream.fd)
