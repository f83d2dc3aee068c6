"""The prefork master with fake children: every process it starts, signals and reaps goes
through a fake :class:`~devserve._engine.children.Processes`, and a fake clock drives its
back-off and limits. Heartbeats are real pipes (the master reads them as it does a real
worker's). The control loop is driven turn by turn in the test's thread."""

from __future__ import annotations

import collections
import logging
import os
import signal
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devserve import servers
from devserve._engine import children, prefork, worker
from devserve._engine.children import ChildBody, Processes
from devserve._engine.prefork import PreforkServer, Worker
from devserve.limits import Limits
from devserve.servers import Outcome


def hello(environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
    start_response("200 OK", [("Content-Length", "5")])
    return [b"hello"]


class FakeClock:
    """Time stands still unless moved, or moves ``step`` seconds on each reading."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.step = 0.0

    def __call__(self) -> float:
        self.now += self.step
        return self.now


class FakeProcesses(Processes):
    """Children that exist only here: forked (their body never runs), signalled (TERM and
    KILL end one, unless it is stubborn), reaped in the order they ended."""

    def __init__(self) -> None:
        super().__init__()
        self.next_pid = 5000
        self.started: dict[int, tuple[str, Any]] = {}  # pid -> (title, body)
        self.alive: set[int] = set()
        self.stubborn: set[int] = set()  # ignore TERM
        self.signals: list[tuple[int, int]] = []
        self.ended: collections.deque[tuple[int, int]] = collections.deque()
        self.write_ends: dict[int, int] = {}  # a worker's heartbeat pipe, its side

    def fork(self, body: ChildBody, title: str) -> int:
        pid = self._new(title, body)
        heartbeat = getattr(body, "heartbeat", None)
        if heartbeat is not None:  # the master closes its copy: keep one to beat with
            self.write_ends[pid] = os.dup(heartbeat)
        return pid

    def spawn(self, argv: Any, env: dict[str, str], passed: tuple[int, int]) -> int:
        return self._new(" ".join(argv), None)

    def _new(self, title: str, body: Any) -> int:
        self.next_pid += 1
        self.started[self.next_pid] = (title, body)
        self.alive.add(self.next_pid)
        return self.next_pid

    def kill(self, pid: int, signum: int) -> None:
        self.signals.append((pid, signum))
        if signum == signal.SIGKILL or (signum == signal.SIGTERM and pid not in self.stubborn):
            self.end(pid, 0 if signum == signal.SIGTERM else -signum)

    def reap(self, block: bool = False) -> tuple[int, int] | None:
        return self.ended.popleft() if self.ended else None

    # --- what the test does to them ---

    def end(self, pid: int, code: int) -> None:
        if pid in self.alive:
            self.alive.discard(pid)
            self.ended.append((pid, code))

    def beat(self, pid: int, what: bytes = worker.READY) -> None:
        os.write(self.write_ends[pid], what)

    def titles(self, pids: Any) -> list[str]:
        return sorted(self.started[pid][0] for pid in pids)

    def sent(self, signum: int) -> list[int]:
        return [pid for pid, number in self.signals if number == signum]

    def close(self) -> None:
        for descriptor in self.write_ends.values():
            os.close(descriptor)


class FakeCompanion:
    """A companion group of one child, as cron workers or the evented child are."""

    description = "a companion"
    kind = "companion"

    def __init__(self, ends_before_exec: bool) -> None:
        self.ends_before_exec = ends_before_exec
        self.pid: int | None = None
        self.retired: list[int] = []
        self.reaped_codes: list[int] = []

    @property
    def pids(self) -> list[int]:
        return [*([self.pid] if self.pid else []), *self.retired]

    def maintain(self, processes: Processes) -> None:
        if self.pid is None and not self.retired:
            self.pid = processes.spawn(["companion"], {}, (0, 0))

    def reaped(self, pid: int, code: int, stopping: bool) -> bool:
        if pid in self.retired:
            self.retired.remove(pid)
            return True
        if pid != self.pid:
            return False
        self.pid = None
        self.reaped_codes.append(code)
        return True

    def retire(self) -> list[int]:
        if self.pid is not None:
            self.retired.append(self.pid)
            self.pid = None
        return self.pids


Master = Callable[..., PreforkServer]


@pytest.fixture
def processes() -> Iterator[FakeProcesses]:
    fake = FakeProcesses()
    yield fake
    fake.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def master(processes: FakeProcesses, clock: FakeClock) -> Iterator[Master]:
    made: list[PreforkServer] = []

    def make(**options: Any) -> PreforkServer:
        options.setdefault("workers", 2)
        options.setdefault("limits", Limits())
        server = PreforkServer(
            hello,
            servers.bind_socket("127.0.0.1", 0),
            processes=processes,
            clock=clock,
            **options,
        )
        made.append(server)
        return server

    yield make
    for server in made:
        server.close()


def turn(server: PreforkServer) -> None:
    """One turn of the master's loop, without its wait: events, reaping, starting."""
    server._step(0)
    server._maintain()
    server._step(0)


def ready(server: PreforkServer, processes: FakeProcesses) -> None:
    for pid in list(server.workers):
        processes.beat(pid)
    turn(server)


def child_ended(server: PreforkServer, processes: FakeProcesses, pid: int, code: int) -> None:
    processes.end(pid, code)
    server.notify(signal.SIGCHLD)
    turn(server)


# --- starting and keeping N workers ---


def test_the_master_starts_its_workers(master: Master, processes: FakeProcesses) -> None:
    server = master(workers=3)
    turn(server)
    assert processes.titles(server.workers) == ["worker #1", "worker #2", "worker #3"]
    assert not server.served_first.is_set()
    processes.beat(next(iter(server.workers)))
    turn(server)
    assert server.served_first.is_set()  # the watcher starts once a worker is ready
    assert [w.ready for w in server.workers.values()] == [True, False, False]


def test_a_dead_worker_is_replaced_under_its_number(
    master: Master, processes: FakeProcesses, caplog: pytest.LogCaptureFixture
) -> None:
    server = master(workers=2)
    turn(server)
    ready(server, processes)
    victim = next(pid for pid, w in server.workers.items() if w.number == 2)
    with caplog.at_level(logging.INFO, logger="devserve.prefork"):
        child_ended(server, processes, victim, -signal.SIGKILL)
    assert victim not in server.workers
    assert sorted(w.number for w in server.workers.values()) == [1, 2]
    assert f"worker #2 (pid {victim}) died (killed by signal SIGKILL); starting another" in (
        caplog.text
    )
    recycled = next(pid for pid, w in server.workers.items() if w.number == 1)
    with caplog.at_level(logging.INFO, logger="devserve.prefork"):
        child_ended(server, processes, recycled, 0)  # --limit-request, say
    assert f"worker #1 (pid {recycled}) recycled; starting another" in caplog.text
    assert len(server.workers) == 2


def test_workers_dying_at_start_back_off(
    master: Master, processes: FakeProcesses, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Two deaths before ready restart at once; from the third, the next start waits 1 s,
    then 2 s, 4 s...; a worker that gets ready ends the count."""
    server = master(workers=1)
    turn(server)

    def die_at_start() -> int:
        [pid] = server.workers
        child_ended(server, processes, pid, 3)
        return len(server.workers)

    with caplog.at_level(logging.INFO, logger="devserve.prefork"):
        assert die_at_start() == 1  # 1 in a row: at once
        assert die_at_start() == 1  # 2
        assert die_at_start() == 0  # 3: backing off
    assert "died while starting (exit code 3), 3 in a row: next attempt in 1 s" in caplog.text
    clock.now += 0.9
    turn(server)
    assert not server.workers
    clock.now += 0.2
    turn(server)
    assert len(server.workers) == 1
    with caplog.at_level(logging.INFO, logger="devserve.prefork"):
        assert die_at_start() == 0
    assert "4 in a row: next attempt in 2 s" in caplog.text
    clock.now += 2.0
    turn(server)
    ready(server, processes)
    [pid] = server.workers
    child_ended(server, processes, pid, -signal.SIGKILL)  # dies once ready: a plain respawn
    assert len(server.workers) == 1
    assert server.backoff.failures == 0


def test_the_backoff_is_capped() -> None:
    clock = FakeClock()
    backoff = children.Backoff(free=0, clock=clock)
    delays = [backoff.failed() for _ in range(10)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30, 30, 30]
    assert not backoff.allows()
    clock.now += 30
    assert backoff.allows()


def test_ttin_and_ttou_change_the_number_of_workers(
    master: Master, processes: FakeProcesses, caplog: pytest.LogCaptureFixture
) -> None:
    server = master(workers=2)
    turn(server)
    with caplog.at_level(logging.INFO, logger="devserve.prefork"):
        server.notify(signal.SIGTTIN)
        turn(server)
        assert processes.titles(server.workers)[-1] == "worker #3"
        assert server.description == "prefork, 3 workers"
        server.notify(signal.SIGTTOU)
        server.notify(signal.SIGTTOU)
        turn(server)
    second, third = (
        next(pid for pid, w in server.workers.items() if w.number == n) for n in (2, 3)
    )
    assert processes.sent(signal.SIGTERM) == [second, third]  # the highest numbers go
    assert "TTOU: 1 workers" in caplog.text
    turn(server)  # reaped
    assert [w.number for w in server.workers.values()] == [1]
    with caplog.at_level(logging.INFO, logger="devserve.prefork"):
        server.notify(signal.SIGTTOU)
        turn(server)
    assert "TTOU ignored: one worker is the minimum" in caplog.text
    assert len(server.workers) == 1


# --- a reload ---


def test_the_previous_images_workers_retire_once_new_ones_are_ready(
    master: Master, processes: FakeProcesses, caplog: pytest.LogCaptureFixture
) -> None:
    read_ends = []
    adopted = []
    for number, pid in enumerate((101, 102), start=1):
        read_end, write_end = os.pipe()
        os.set_blocking(read_end, False)
        os.close(write_end)
        read_ends.append(read_end)
        adopted.append(Worker(pid, number, read_end, last_seen=0.0, ready=True))
        processes.alive.add(pid)
    server = master(workers=2, adopted=adopted)
    turn(server)
    assert set(server.old) == {101, 102}
    assert processes.titles(server.workers) == ["worker #1", "worker #2"]
    assert processes.sent(signal.SIGTERM) == []  # the old serve until the new are ready
    first_new = next(iter(server.workers))
    processes.beat(first_new)
    turn(server)
    assert processes.sent(signal.SIGTERM) == []  # one of two
    with caplog.at_level(logging.INFO, logger="devserve.prefork"):
        ready(server, processes)
    assert sorted(processes.sent(signal.SIGTERM)) == [101, 102]
    assert "retiring 2 worker(s) of the previous code" in caplog.text
    turn(server)
    assert server.old == {}


def test_a_reload_hands_the_workers_over_and_settles_the_companions(
    master: Master, processes: FakeProcesses
) -> None:
    """Workers serve on through the exec; a companion that ends before the exec (cron
    workers) is stopped and waited for; another (the evented child) is retired and goes on
    to finish its requests."""
    waited, retired = FakeCompanion(ends_before_exec=True), FakeCompanion(ends_before_exec=False)
    server = master(workers=2, companions=[waited, retired])
    turn(server)
    ready(server, processes)
    assert server.description == "prefork, 2 workers + a companion + a companion"
    companion_pids = [waited.pid, retired.pid]
    assert all(pid in processes.alive for pid in companion_pids)
    processes.stubborn.add(companion_pids[1])  # it takes its time to finish its requests
    server.handle_event(signal.SIGHUP)
    assert server._outcome is Outcome.RELOAD
    server._drain()
    assert sorted(processes.sent(signal.SIGTERM)) == sorted(companion_pids)
    assert waited.pids == []  # reaped before the exec
    assert retired.pids == [companion_pids[1]]  # still finishing: the next image retires it
    handover = server.handover()
    assert sorted((w.pid, w.number) for w in handover.workers) == sorted(
        (pid, w.number) for pid, w in server.workers.items()
    )
    assert all(pid in processes.alive for pid in server.workers)  # untouched


def test_a_stop_terms_every_child_and_kills_what_outlives_the_grace(
    master: Master, processes: FakeProcesses, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    companion = FakeCompanion(ends_before_exec=False)
    server = master(workers=2, companions=[companion], shutdown_grace=5.0)
    turn(server)
    stubborn = next(iter(server.workers))
    processes.stubborn.add(stubborn)
    server.handle_event(signal.SIGTERM)
    clock.step = 1.0  # each reading of the clock: a second later
    with caplog.at_level(logging.WARNING, logger="devserve.prefork"):
        server._drain()
    assert set(processes.sent(signal.SIGTERM)) == {*server_pids(processes), stubborn}
    assert processes.sent(signal.SIGKILL) == [stubborn]
    assert "1 worker(s) killed with their request cut short" in caplog.text
    assert server.unfinished == 1
    assert processes.alive == set()
    assert server.workers == {} and companion.pids == []


def server_pids(processes: FakeProcesses) -> set[int]:
    return set(processes.started)


# --- signals and limits ---


def test_signals_are_forwarded_to_every_child(master: Master, processes: FakeProcesses) -> None:
    actions: list[str] = []
    companion = FakeCompanion(ends_before_exec=True)
    server = master(
        workers=2,
        companions=[companion],
        signal_actions={signal.SIGQUIT: lambda: actions.append("master's stacks")},
    )
    turn(server)
    everyone = sorted([*server.workers, *companion.pids])
    for signum in (signal.SIGUSR1, signal.SIGQUIT):
        server.notify(signum)
        turn(server)
        assert sorted(processes.sent(signum)) == everyone
    assert actions == ["master's stacks"]  # QUIT: the master's own stacks too; USR1: not


def test_a_silent_worker_gets_quit_then_kill(
    master: Master, processes: FakeProcesses, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    server = master(workers=1, limits=Limits(time_real=10.0))
    turn(server)
    [pid] = server.workers
    clock.now += 9.0
    processes.beat(pid, worker.ALIVE)
    turn(server)
    clock.now += 9.0  # 9 s since the last heartbeat: within the limit
    turn(server)
    assert processes.sent(signal.SIGQUIT) == []
    clock.now += 2.0
    with caplog.at_level(logging.WARNING, logger="devserve.prefork"):
        turn(server)
    assert processes.sent(signal.SIGQUIT) == [pid]
    assert "silent for 11 s (--limit-time-real 10)" in caplog.text
    clock.now += prefork.KILL_AFTER_QUIT
    turn(server)
    assert processes.sent(signal.SIGKILL) == [pid]


def test_a_companion_hears_of_its_own_children_only(
    master: Master, processes: FakeProcesses
) -> None:
    companion = FakeCompanion(ends_before_exec=True)
    server = master(workers=1, companions=[companion])
    turn(server)
    first = companion.pid
    assert first is not None and first not in server.workers
    child_ended(server, processes, first, -signal.SIGKILL)
    assert companion.reaped_codes == [-signal.SIGKILL]
    assert companion.pid not in (None, first)  # started again by its own rule
    assert len(server.workers) == 1  # the workers were not touched


def test_the_child_signal_table_is_installed_in_a_real_child() -> None:
    """The one real fork here: a body that TERM stops, with the table's dispositions."""

    class Body:
        def __init__(self) -> None:
            self.read_end, self.write_end = os.pipe()
            self.stopped = False

        def stop(self) -> None:
            self.stopped = True

        def run(self) -> int:
            os.close(self.read_end)
            ignored = [
                signal.getsignal(s) == signal.SIG_IGN
                for s in (signal.SIGINT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU)
            ]
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, []) & children.CHILD_SIGNALS
            os.write(self.write_end, b"ready")
            os.kill(os.getpid(), signal.SIGTERM)  # handled: the body is told to stop
            return 0 if all(ignored) and self.stopped and not blocked else 7

    body = Body()
    pid = Processes().fork(body, "test child")
    os.close(body.write_end)
    with os.fdopen(body.read_end, "rb") as reader:
        assert reader.read() == b"ready"
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_exit_descriptions_and_the_orphan_check() -> None:
    assert children.describe_exit(-signal.SIGKILL) == "killed by signal SIGKILL"
    assert children.describe_exit(3) == "exit code 3"
    assert children.orphaned(os.getppid()) is False
    assert children.orphaned(os.getpid()) is True


def test_the_master_keeps_one_descriptor_per_worker(
    master: Master, processes: FakeProcesses
) -> None:
    """A worker costs the master its heartbeat pipe's read end, nothing more (what the
    worker needs is made in the worker), and a dead worker's goes with it."""

    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    server = master(workers=1)
    before = open_descriptors()
    server.notify(signal.SIGTTIN)
    server.notify(signal.SIGTTIN)
    turn(server)
    assert len(server.workers) == 3
    assert open_descriptors() == before + 3 * 2  # a read end each, and the fake's write end
    for pid in list(server.workers)[1:]:
        child_ended(server, processes, pid, -signal.SIGKILL)  # replaced, under its number
    assert open_descriptors() == before + 3 * 2 + 2  # the dead ones' write ends, kept here
