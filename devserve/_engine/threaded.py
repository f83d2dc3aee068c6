"""The threaded server, the default mode: a control loop in the main thread accepts
connections and waits for their requests; pooled threads serve them.

A pooled non-daemon thread serves a connection once its request has arrived
(:mod:`devserve._engine.connection`), and records what it is serving so stack dumps and
limits can name it; a kept-alive connection goes back to the loop between requests, so an
idle one holds no thread.
"""

from __future__ import annotations

import collections
import contextlib
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from devserve._engine.connection import HTTPConnection
from devserve._engine.devroutes import DevRoutes
from devserve._engine.pool import (
    THREAD_STACK,
    HeldConnection,
    OutOfThreads,
    RequestPool,
    RequestThread,
    default_thread_cap,
)
from devserve._engine.wire import (
    BODY_TIMEOUT,
    HEAD_TIMEOUT,
    MIN_BODY_RATE,
    RATE_WINDOW,
    READ_SIZE,
    RequestInfo,
    ServerInfo,
    close_connection,
    error_response,
    log_bad_request,
)
from devserve.limits import Limits
from devserve.reloader import FileChanges
from devserve.servers import (
    IDLE_CONNECTION_TIMEOUT,
    ControlLoop,
    Outcome,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["ThreadedServer", "held_connections_cap"]

_logger = logging.getLogger("devserve.servers")

LIMIT_RELOAD_GRACE = 60.0  # a reload for a limit waits this long for the other requests
LIMITS_EVERY = 1.0  # seconds between two checks of the threaded server's limits
ACCEPT_BATCH = 32  # connections accepted per wake-up of the control loop
# Accepted connections the loop holds (waiting for their request or a thread): what the
# descriptor limit leaves, within these bounds; past it the oldest idle one makes room.
MIN_HELD, MAX_HELD = 64, 16384
DESCRIPTORS_SPARE = 256  # descriptors left for the app (files, database connections...)
# Bytes of request body the loop receives before a thread serves the request: a flood of
# slow uploads holds no thread (the body is due within BODY_TIMEOUT); larger ones are read
# by their thread, which the handler's minimum body rate frees from a slow one.
LOOP_BODY = 1 << 20
LOOP_BODIES = 256 << 20  # bytes of bodies the loop holds in all; beyond, threads read them
LET_GO_IDLE_AFTER = 1.0  # at the cap, an idle connection goes only once idle this long


class ThreadedServer(ControlLoop):
    """The default mode: a control loop in the main thread accepts connections and waits
    for their requests; pooled threads serve them.

    An accepted connection waits in the loop's selector until its request has arrived (its
    head, and a small body whole), so an idle or slow one (a browser's preconnect, a client
    trickling bytes) holds no thread, and at a reload every connection not yet being served
    is handed to the next image: nothing accepted is dropped. The loop holds as many
    connections as the descriptor limit allows; past that it lets the oldest idle one go
    (else the oldest slow one) for each new one, so a flood never stalls a new client. Its
    cost per event does not grow with the connections held (deadlines in a heap)."""

    mode = "threaded"

    def __init__(
        self,
        app: WSGIApplication,
        sock: socket.socket,
        *,
        max_threads: int | None = None,
        shutdown_grace: float = 5.0,
        reload_grace: float = 5.0,
        on_changes: Callable[[FileChanges], frozenset[str]] | None = None,
        connections: Iterable[tuple[socket.socket, bytes]] = (),
        signal_actions: Mapping[int, Callable[[], None]] | None = None,
        limits: Limits | None = None,
        paused: Callable[[], bool] = lambda: False,
        max_body: int = ServerInfo.max_body,
        own: DevRoutes | None = None,
    ) -> None:
        super().__init__(
            sock,
            shutdown_grace=shutdown_grace,
            reload_grace=reload_grace,
            on_changes=on_changes,
            signal_actions=signal_actions,
            own=own,
        )
        self.app = app
        self.limits = limits or Limits()
        self.paused = paused  # True while a debugger holds a request: limits stand aside
        self.served_first = threading.Event()  # set once a first connection was answered
        self._limits_checked = time.monotonic()
        self._past_limits: set[RequestThread] = set()  # a reload does not wait for these
        # A reload for a limit, waiting for the requests that ran when it was decided:
        # (why, when, [(thread, the request it served)]); meanwhile everything is served.
        self._retiring: tuple[str, float, list[tuple[RequestThread, Any]]] | None = None
        host, port = sock.getsockname()[:2]
        self.server_info = ServerInfo(host, port, max_body=max_body, **self.own_routes())
        threading.stack_size(THREAD_STACK)  # the pool's threads, and what the app starts
        self.max_threads = max_threads or default_thread_cap(self.limits.memory_hard)
        self.pool = RequestPool(
            self._serve_connection, self._connection_done, self.max_threads, self._thread_idle
        )
        self.max_held = held_connections_cap()
        # Connections waiting in the selector, by descriptor, oldest first: those with
        # nothing received yet, and those whose request is arriving (head or body).
        self._idle: collections.OrderedDict[int, HeldConnection] = collections.OrderedDict()
        self._arriving: collections.OrderedDict[int, HeldConnection] = collections.OrderedDict()
        self._expiries: list[tuple[float, int, int]] = []  # (deadline, order, fd), maybe stale
        self._expiry_order = itertools.count()  # ties: the heap never compares connections
        self._ready: collections.deque[HeldConnection] = collections.deque()  # need a thread
        self._accepting = False
        self._accept_retry = 0.0  # after running out of descriptors: when to try again
        self._let_go = 0  # connections let go for new ones since the last report
        self._let_go_reported = 0.0
        self._loop_bytes = 0  # request bodies the loop holds, in all
        for connection, received in connections:  # handed over by the previous image
            try:
                self._hold(connection, connection.getpeername(), received)
            except OSError:
                connection.close()

    def handle_mode_event(self, event: Any) -> None:
        if event == "connection-done":
            self._serve_ready()
        elif isinstance(event, HeldConnection):
            self._kept_alive(event)

    def _http(self, held: HeldConnection, received: bytes = b"") -> HTTPConnection:
        return HTTPConnection(
            held.connection, held.client, self.app, self.server_info, received=received
        )

    def _serve_connection(self, held: HeldConnection) -> bool:
        thread = threading.current_thread()

        def track(info: RequestInfo | None) -> None:
            thread.request = info  # type: ignore[attr-defined]

        held.connection.settimeout(BODY_TIMEOUT)  # blocking, but a stalled client ends
        http = held.http = held.http or self._http(held)
        http.on_request = track
        return http.serve()

    def _connection_done(self, held: HeldConnection, keep: bool) -> None:
        if not self.served_first.is_set():
            self.served_first.set()
        if keep:  # back to the selector until its next request
            idle = HeldConnection(held.connection, held.client, self._idle_deadline())
            if held.http is not None and held.http.received:  # a pipelined head begun
                idle.http, idle.deadline = held.http, time.monotonic() + HEAD_TIMEOUT
            if not self.notify(idle):
                close_connection(held.connection)  # the server is gone

    def _thread_idle(self) -> None:
        # Wake the loop only when it waits for a thread or a drain: not once per request.
        if self._ready or self._draining or not self._accepting:
            self.notify("connection-done")

    # --- serving ---

    def _start(self) -> None:
        self._set_accepting(True)

    def _turn(self) -> None:
        self._step(self._next_expiry())
        self._check_limits()

    def _stop_accepting(self) -> None:
        self._set_accepting(False)

    def _step(self, timeout: float | None) -> None:
        for key, mask in self._selector.select(timeout):
            if key.data == "wake":
                self._handle_events()
            elif key.data == "accept":
                if self._outcome is None:
                    self._accept()
            elif not self._own_ready(key, mask):
                try:
                    self._request_arrived(key.data)
                except Exception as error:  # that connection's trouble (MemoryError...)
                    self._errors.add(error)
                    self._close_waiting(key.data)
        self._expire_idle()
        self._report_let_go()
        # Accept while serving, unless out of descriptors (then a little later).
        self._set_accepting(self._outcome is None and time.monotonic() >= self._accept_retry)

    def _set_accepting(self, accepting: bool) -> None:
        if accepting and not self._accepting:
            self._selector.register(self.listener, selectors.EVENT_READ, "accept")
        elif not accepting and self._accepting:
            self._selector.unregister(self.listener)
        self._accepting = accepting

    def _accept(self) -> None:
        """Accept what the backlog holds (up to a batch); at the cap of held connections,
        each new one takes the place of the oldest idle (or slowest) one."""
        for _ in range(ACCEPT_BATCH):
            try:
                connection, client = self.listener.accept()
            except (BlockingIOError, ConnectionAbortedError, InterruptedError):
                return
            except OSError as error:  # out of descriptors: leave the rest in the backlog
                _logger.warning("cannot accept connections: %s", error.strerror)
                self._accept_retry = time.monotonic() + 1.0
                return
            with contextlib.suppress(OSError):  # responses leave at once (not a TCP socket?)
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if len(self._idle) + len(self._arriving) + len(self._ready) >= self.max_held:
                self._let_one_go()
            self._hold(connection, client)

    def _let_one_go(self) -> None:
        """Make room: a connection idle for a while goes (the one idle the longest); else
        the one whose request has been arriving the longest (a 408); else a newer idle one.
        A client just accepted is never let go for a slow one."""
        oldest_idle = next(iter(self._idle.values()), None)
        oldest_arriving = next(iter(self._arriving.values()), None)
        idle_a_while = oldest_idle is not None and (
            time.monotonic() - oldest_idle.since > LET_GO_IDLE_AFTER
        )
        held = (oldest_idle if idle_a_while else oldest_arriving) or oldest_idle
        if held is None:
            return  # all of them wait for a thread: the cap of threads is the limit
        if held.http is not None:
            reason = "request too slow while the server was full"
            with contextlib.suppress(OSError):  # best effort: the socket is non-blocking
                held.connection.send(error_response(408, f"Bad request: {reason}\n".encode()))
        self._close_waiting(held)
        self._let_go += 1

    def _report_let_go(self) -> None:
        if self._let_go and time.monotonic() - self._let_go_reported >= 1.0:
            _logger.warning(
                "%d connection(s) let go for newer ones: %d held, the most this process's "
                "descriptors allow (ulimit -n)",
                self._let_go,
                self.max_held,
            )
            self._let_go = 0
            self._let_go_reported = time.monotonic()

    def _idle_deadline(self) -> float:
        return time.monotonic() + IDLE_CONNECTION_TIMEOUT

    def _hold(self, connection: socket.socket, client: Any, received: bytes = b"") -> None:
        connection.setblocking(False)  # the loop reads request heads as they come
        held = HeldConnection(connection, client, self._idle_deadline())
        if received:  # a request begun before a reload
            held.http = self._http(held, received)
            held.deadline = time.monotonic() + HEAD_TIMEOUT
            if held.http.head_complete:
                self._ready.append(held)
                self._serve_ready()
                return
        self._wait_for_request(held)

    def _wait_for_request(self, held: HeldConnection) -> None:
        """In the selector until its request (or the rest of it) arrives."""
        self._selector.register(held.connection, selectors.EVENT_READ, held)
        (self._idle if held.http is None else self._arriving)[held.connection.fileno()] = held
        self._expires(held)

    def _expires(self, held: HeldConnection) -> None:
        """Its (new) deadline in the heap; the entries of its old ones go stale. The heap
        keeps descriptors, not connections, and is rebuilt when mostly stale."""
        entry = (held.deadline, next(self._expiry_order), held.connection.fileno())
        heapq.heappush(self._expiries, entry)
        live = len(self._idle) + len(self._arriving)
        if len(self._expiries) > 2 * live + 64:
            self._expiries = [
                (h.deadline, next(self._expiry_order), fd)
                for fd, h in (*self._idle.items(), *self._arriving.items())
            ]
            heapq.heapify(self._expiries)

    def _kept_alive(self, held: HeldConnection) -> None:
        """A connection kept open after its request: wait for the next one (or, once the
        server drains, hand it to the next image or close it)."""
        if not self._draining:
            held.connection.setblocking(False)
            self._wait_for_request(held)
        elif self._outcome is Outcome.RELOAD:
            self.handed_connections.append((held.connection, held.received()))
        else:
            held.connection.close()
        self._serve_ready()

    def _request_arrived(self, held: HeldConnection) -> None:
        """Bytes (or the end) came: read them; once the request is in (its head, and a
        small body whole), a thread takes the connection."""
        try:
            data = held.connection.recv(READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        fd = held.connection.fileno()
        if not data and not (held.http is not None and held.http.head_complete):
            self._close_waiting(held)  # closed by the client (idle, or mid-head)
            return
        if not data:  # the body ended short: a thread answers it (a 400), as when reading it
            self._to_thread(held, fd)
            return
        now = time.monotonic()
        if held.http is None:
            held.http = self._http(held)
            held.deadline = now + HEAD_TIMEOUT
            self._idle.pop(fd, None)
            self._arriving[fd] = held
            self._expires(held)
        if held.http.head_complete:  # a body the loop receives: as a thread would
            held.http.feed_body(data)
            self._body_came(held, len(data), now)
        elif held.http.feed(data) and self._receives_body(held):
            # A small body still coming: received here too, so a slow one holds no thread.
            held.body_since = now
            self._body_came(held, 0, now)
        if held.http.head_complete and not (held.body_since and held.http.body_missing(LOOP_BODY)):
            self._to_thread(held, fd)  # all in, or a body the loop does not receive
        elif (
            held.body_since
            and held.body_bytes < MIN_BODY_RATE * (now - held.body_since)
            and (now - held.body_since > RATE_WINDOW)
        ):
            reason = f"the body came slower than {MIN_BODY_RATE} bytes/s"
            log_bad_request(held.http.client_host, 408, reason)
            with contextlib.suppress(OSError):  # best effort: the socket is non-blocking
                held.connection.send(error_response(408, f"Bad request: {reason}\n".encode()))
            self._close_waiting(held)

    def _receives_body(self, held: HeldConnection) -> bool:
        """Whether the loop receives the request's body (a small one, while the loop holds
        less than LOOP_BODIES of bodies in all) before a thread serves it."""
        assert held.http is not None
        missing = held.http.body_missing(LOOP_BODY)
        return missing > 0 and self._loop_bytes + missing <= LOOP_BODIES

    def _body_came(self, held: HeldConnection, size: int, now: float) -> None:
        """Progress: the body stalls when nothing comes for BODY_TIMEOUT (as in a thread)."""
        held.body_bytes += size
        self._loop_bytes += size
        held.deadline = now + BODY_TIMEOUT
        self._expires(held)

    def _to_thread(self, held: HeldConnection, fd: int) -> None:
        self._selector.unregister(held.connection)
        del self._arriving[fd]
        self._loop_bytes -= held.body_bytes
        target = held.http.claimed_by_loop() if held.http is not None else None
        if target is not None and self.own is not None:  # devserve's own: no thread needed
            self.own.take(held.connection.detach(), target)
            return
        self._ready.append(held)
        self._serve_ready()

    def _serve_ready(self) -> None:
        if self._outcome is Outcome.RELOAD:
            return  # the next image serves them
        while self._ready:
            held = self._ready[0]
            try:
                if not self.pool.try_serve(held):
                    return  # all request threads busy: the next connection-done resumes
            except OutOfThreads as error:
                _logger.warning("cannot start a request thread (%s): 503", error)
                with contextlib.suppress(OSError):  # best effort: the socket is non-blocking
                    held.connection.send(error_response(503, b"Out of request threads.\n"))
                held.connection.close()
            self._ready.popleft()

    def _next_expiry(self) -> float | None:
        timeouts = [self._accept_retry - time.monotonic()] if not self._accepting else []
        if self.limits.time_real or self.limits.memory_soft or self._retiring:
            timeouts.append(self._limits_checked + LIMITS_EVERY - time.monotonic())
        if self._let_go:
            timeouts.append(1.0)  # to report them
        expiry = self._earliest_expiry()
        if expiry is not None:
            timeouts.append(expiry - time.monotonic())
        return max(0.0, min(timeouts)) if timeouts else None

    def _earliest_expiry(self) -> float | None:
        """The deadline of the connection due first (stale heap entries dropped on the way:
        a connection served, closed, or given a later deadline since)."""
        while self._expiries:
            deadline, _, fd = self._expiries[0]
            held = self._held(fd)
            if held is not None and held.deadline == deadline:
                return deadline
            heapq.heappop(self._expiries)
        return None

    def _held(self, fd: int) -> HeldConnection | None:
        return self._idle.get(fd) or self._arriving.get(fd)

    def _expire_idle(self) -> None:
        """Close the connections that sent nothing for IDLE_CONNECTION_TIMEOUT, and answer
        408 to those whose request head (or small body) did not arrive in time."""
        now = time.monotonic()
        while (deadline := self._earliest_expiry()) is not None and deadline <= now:
            _, _, fd = heapq.heappop(self._expiries)
            held = self._held(fd)
            assert held is not None  # the entry was checked just now
            if held.http is not None:
                part = "body" if held.http.head_complete else "head"
                took = BODY_TIMEOUT if held.http.head_complete else HEAD_TIMEOUT
                reason = f"the request {part} took over {took:g}s"
                log_bad_request(held.http.client_host, 408, reason)
                with contextlib.suppress(OSError):  # best effort: the socket is non-blocking
                    held.connection.send(error_response(408, f"Bad request: {reason}\n".encode()))
            self._close_waiting(held)

    def _close_waiting(self, held: HeldConnection) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(held.connection)
        with contextlib.suppress(OSError):
            fd = held.connection.fileno()
            if self._idle.get(fd) is held:
                del self._idle[fd]
            elif self._arriving.get(fd) is held:
                del self._arriving[fd]
                self._loop_bytes -= held.body_bytes
        held.connection.close()

    # --- limits ---

    def _check_limits(self) -> None:
        """Once a second: a request past --limit-time-real, or the process above
        --limit-memory-soft, logs the stacks of the requests running, then reloads once the
        others have finished (waiting LIMIT_RELOAD_GRACE at most), serving meanwhile. Not
        while a debugger holds a request."""
        now = time.monotonic()
        if now - self._limits_checked < LIMITS_EVERY or self._outcome is not None:
            return
        self._limits_checked = now
        if self._retiring is not None:
            self._retire_when_done(now)
            return
        if self.paused():
            return
        busy = self.busy_requests()
        limit = self.limits.time_real
        late = [t for t in busy if limit and t.request is not None and t.request.age > limit]
        if late:
            cause = f"a request ran past --limit-time-real {self.limits.time_real:g}s"
            self._past_limits = set(late)
        else:
            resident = self.limits.over_memory_soft()
            if resident is None:
                return
            cause = f"{resident:.0f} MiB used, above --limit-memory-soft {self.limits.memory_soft}"
        from devserve import debug

        _logger.warning("%s: reloading once the other requests finish", cause)
        debug.dump_stacks(late or busy)
        others = [(t, t.request) for t in busy if t not in self._past_limits]
        self._retiring = (cause, now, others)
        self._retire_when_done(now)

    def _retire_when_done(self, now: float) -> None:
        """The reload for a limit goes ahead once the requests that ran when it was decided
        are done (or LIMIT_RELOAD_GRACE has passed): those started since are short-lived
        and get the usual drain."""
        assert self._retiring is not None
        cause, since, others = self._retiring
        running = [thread for thread, request in others if thread.request is request]
        if running and now - since < LIMIT_RELOAD_GRACE:
            return
        self._retiring = None
        self._reload(cause, since)

    # --- stopping ---

    def busy_requests(self) -> list[RequestThread]:
        """The threads inside the app right now."""
        return [thread for thread in self.pool.busy() if thread.request is not None]

    def in_flight(self) -> list[RequestInfo]:
        requests = (thread.request for thread in self.pool.busy())
        return [request for request in requests if request is not None]

    def _drain(self) -> None:
        """Let running requests finish within the grace period (a second INT/TERM ends the
        wait at once). Connections not being served yet: handed to the next image on a
        reload; on a stop, the idle ones are closed and those with a request served."""
        self._draining = True
        waiting = [*self._idle.values(), *self._arriving.values()]
        for held in waiting:
            self._selector.unregister(held.connection)
        self._idle.clear()
        self._arriving.clear()
        self._expiries.clear()
        self._loop_bytes = 0
        if self._outcome is Outcome.RELOAD:
            self.handed_connections = [
                (held.connection, held.received()) for held in (*waiting, *self._ready)
            ]
            self._ready.clear()
        else:
            for held in waiting:
                if held.http is not None and held.http.head_complete:
                    self._ready.append(held)  # its body coming: served within the grace
                else:
                    held.connection.close()
            self._serve_ready()
        if self._outcome is Outcome.STOP:
            with contextlib.suppress(OSError):
                self.listener.close()  # also when a stop replaced a reload
        grace = self.reload_grace if self._outcome is Outcome.RELOAD else self.shutdown_grace
        deadline = time.monotonic() + grace
        while self._outcome is not Outcome.FORCED:
            remaining = deadline - time.monotonic()
            running = [thread for thread in self.pool.busy() if thread not in self._past_limits]
            if not (running or self._ready) or remaining <= 0:
                break
            for key, _ in self._selector.select(timeout=remaining):
                if key.data == "wake":
                    self._handle_events()
        self.unfinished = len(self.pool.busy()) + len(self._ready)
        if self._outcome is Outcome.FORCED:
            _logger.warning("forced stop: %d request(s) cut short", self.unfinished)
        elif self.unfinished > len(self._past_limits):
            _logger.warning(
                "%d request(s) still running after the %gs grace period are cut short",
                self.unfinished,
                grace,
            )
        elif self.unfinished:
            _logger.warning("%d request(s) past the limits cut short", self.unfinished)

    def close(self) -> None:
        """Release everything; idle pooled threads end (they are not daemons)."""
        with self._closing:
            self._closed = True
        self.pool.close()
        held = [*self._idle.values(), *self._arriving.values(), *self._ready]
        while not self.events.empty():  # kept alive after the loop ended
            event = self.events.get_nowait()
            if isinstance(event, HeldConnection):
                held.append(event)
        self._idle.clear()
        self._arriving.clear()
        handed = (connection for connection, _ in self.handed_connections)
        for connection in [*(h.connection for h in held), *handed]:
            connection.close()
        self._close_loop()
        with contextlib.suppress(OSError):
            self.listener.close()


def held_connections_cap() -> int:
    """How many connections the loop may hold: what the descriptor limit leaves, with room
    for the app's own files and sockets."""
    import resource

    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_HELD
    return max(MIN_HELD, min(MAX_HELD, soft - DESCRIPTORS_SPARE))
