"""--workers N on the real CLI: the master and its workers, TTIN/TTOU, respawn (including a
worker reaped before its heartbeat is read), the per-worker limits, signals forwarded,
reloads under load and with broken code, and stopping. Workers are found as the master's
children with psutil, by the titles setproctitle gives them."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import signal
import threading
import time
from collections.abc import Collection
from pathlib import Path

import psutil
import pytest

from devserve.errors import ExitCode
from tests.integration.conftest import StartDevserve
from tests.integration.harness import (
    APPS,
    DevserveProcess,
    Response,
    count_reloads,
    happens_within,
    run_cli,
    wait_reloads,
    wait_until,
    wait_watching,
    write_file,
)
from tests.integration.test_bad_input import assert_one_line_error

WORKER_TITLE = re.compile(r"devserve: worker #(\d+) \[(\d+)\]")
LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ \d+ ", re.MULTILINE)


# --- looking at the processes ---


def title(pid: int) -> str:
    """The process title setproctitle set (``/proc/<pid>/cmdline``, padding dropped)."""
    try:
        return " ".join(part for part in psutil.Process(pid).cmdline() if part)
    except psutil.Error:
        return ""


def children(server: DevserveProcess) -> dict[int, str]:
    """The processes under the one started, and their titles ("" for one that ended, not
    reaped yet): the master's children, or with warm reloads the warm parent's master's
    (and the previous master's workers, which the warm parent adopted)."""
    try:
        found = psutil.Process(server.pid).children(recursive=True)
    except psutil.Error:
        return {}
    titles = {child.pid: title(child.pid) for child in found}
    return {pid: name for pid, name in titles.items() if name != "devserve: master"}


def workers(server: DevserveProcess, found: dict[int, str] | None = None) -> dict[int, int]:
    """The master's children titled as workers: {pid: worker number}."""
    numbers = {}
    for pid, name in (children(server) if found is None else found).items():
        match = WORKER_TITLE.fullmatch(name)
        if match and int(match[2]) == pid:
            numbers[pid] = int(match[1])
    return numbers


def wait_workers(
    server: DevserveProcess,
    count: int,
    *,
    without: Collection[int] = (),
    timeout: float = 10.0,
) -> dict[int, int]:
    """Until the master's children are exactly ``count`` titled workers, none of them in
    ``without``: every worker that ended is reaped, every new one runs."""

    def settled() -> dict[int, int] | None:
        if server.popen.poll() is not None:
            raise AssertionError(
                f"devserve exited ({server.popen.returncode}) while waiting for {count} "
                f"worker(s); log:\n{server.log}"
            )
        found = children(server)
        numbers = workers(server, found)
        if len(numbers) == len(found) == count and not numbers.keys() & set(without):
            return numbers
        return None

    return wait_until(settled, timeout, f"{count} worker(s) other than {sorted(without)}")


def pid_of(server: DevserveProcess) -> int:
    response = server.request("/pid", timeout=10)
    assert response.status == 200, response
    return int(response.text)


def wait_serving(server: DevserveProcess, pids: Collection[int]) -> None:
    """Until each of ``pids`` has answered a request (so is past its start)."""
    answered: set[int] = set()

    def everyone_answered() -> bool:
        answered.add(pid_of(server))
        return answered >= set(pids)

    wait_until(everyone_answered, 10, f"workers {sorted(pids)} to answer")


def group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def log_block(log: str, header: str) -> str:
    """The multi-line log record that starts with ``header``."""
    start = log.index(header)
    end = LOG_RECORD.search(log, start)
    return log[start : end.start() if end else len(log)]


def start_limitsapp(devserve: StartDevserve, tmp_path: Path, *args: str) -> DevserveProcess:
    """limitsapp in prefork mode; its slow routes touch ``tmp_path/started`` once running."""
    return devserve(
        "-p",
        "0",
        *args,
        "limitsapp:app",
        cwd=APPS,
        env_extra={"LIMITSAPP_STARTED": str(tmp_path / "started")},
    )


def wait_started(tmp_path: Path) -> int:
    """Until a slow route runs; the PID of the worker running it."""
    marker = tmp_path / "started"
    return int(wait_until(lambda: marker.exists() and marker.read_text(), 10, "the slow route"))


def send_in_background(
    server: DevserveProcess, path: str, timeout: float
) -> tuple[threading.Thread, list[Response | OSError]]:
    """Send a request from a thread; its response, or the error, lands in the list."""
    results: list[Response | OSError] = []

    def send() -> None:
        try:
            results.append(server.request(path, timeout=timeout))
        except (OSError, http.client.HTTPException) as error:  # IncompleteRead is neither
            results.append(error if isinstance(error, OSError) else OSError(repr(error)))

    thread = threading.Thread(target=send)
    thread.start()
    return thread, results


# --- the processes ---


def test_master_and_titled_workers(devserve: StartDevserve, tmp_path: Path) -> None:
    server = start_limitsapp(devserve, tmp_path, "--workers", "3")
    found = wait_workers(server, 3)
    assert sorted(found.values()) == [1, 2, 3]
    assert title(server.pid) == "devserve: master"
    kids = psutil.Process(server.pid).children()
    assert sorted(kid.pid for kid in kids) == sorted(found)  # no other child
    for pid, number in found.items():
        assert title(pid) == f"devserve: worker #{number} [{pid}]"
        assert psutil.Process(pid).ppid() == server.pid
    answered = {pid_of(server) for _ in range(12)}
    assert answered <= found.keys(), (answered, found)
    assert server.pid not in answered
    assert "mode: prefork, 3 workers" in server.log


def test_ttin_adds_a_worker_and_ttou_retires_one(devserve: StartDevserve, tmp_path: Path) -> None:
    server = start_limitsapp(devserve, tmp_path, "--workers", "2")
    first = wait_workers(server, 2)

    server.signal(signal.SIGTTIN)
    server.wait_for_log("TTIN: 3 workers")
    three = wait_workers(server, 3)
    assert three.keys() > first.keys()
    assert sorted(three.values()) == [1, 2, 3]

    server.signal(signal.SIGTTOU)
    server.wait_for_log("TTOU: 2 workers")
    two = wait_workers(server, 2)
    assert sorted(two.values()) == [1, 2]  # the highest number goes
    assert two == first

    server.signal(signal.SIGTTOU)
    server.wait_for_log("TTOU: 1 workers")
    one = wait_workers(server, 1)
    assert list(one.values()) == [1]

    server.signal(signal.SIGTTOU)
    server.wait_for_log("TTOU ignored: one worker is the minimum")
    assert workers(server) == one
    assert pid_of(server) in one
    # The target is still one: the next TTIN makes two (from zero it would make one).
    server.signal(signal.SIGTTIN)
    server.wait_for_log("TTIN: 2 workers")
    assert wait_workers(server, 2).keys() > one.keys()


def test_a_killed_worker_is_replaced(devserve: StartDevserve, tmp_path: Path) -> None:
    server = start_limitsapp(devserve, tmp_path, "--workers", "2")
    before = wait_workers(server, 2)
    wait_serving(server, before)
    victim, number = min(before.items())
    (survivor,) = before.keys() - {victim}
    os.kill(victim, signal.SIGKILL)
    after = wait_workers(server, 2, without={victim}, timeout=2)
    assert survivor in after
    (replacement,) = after.keys() - {survivor}
    assert after[replacement] == number  # takes the free number
    server.wait_for_log(
        rf"worker #{number} \(pid {victim}\) died \(killed by signal SIGKILL\); starting another"
    )
    wait_serving(server, after)


def test_workers_dying_together_are_replaced(devserve: StartDevserve, tmp_path: Path) -> None:
    server = start_limitsapp(devserve, tmp_path, "--workers", "2")
    for _ in range(5):
        before = wait_workers(server, 2)
        wait_serving(server, before)  # started: their ends are not start-up failures
        for pid in before:
            os.kill(pid, signal.SIGKILL)
        wait_workers(server, 2, without=set(before), timeout=5)
    assert "Traceback" not in server.log
    assert server.log.count("died (killed by signal SIGKILL); starting another") == 10


def wake_pipe(pid: int) -> str:
    """The write end of the master's wake-up pipe, as a /proc path: of the pipes it holds,
    the only one whose both ends it holds (a heartbeat's write end is in its worker)."""
    ends: dict[str, list[str]] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("pipe:"):
                ends.setdefault(target, []).append(fd)
    pairs = [fds for fds in ends.values() if len(fds) == 2]
    assert len(pairs) == 1, f"expected one pipe with both ends in the master: {ends}"
    for fd in pairs[0]:
        flags = re.search(r"flags:\s+(\d+)", Path(f"/proc/{pid}/fdinfo/{fd}").read_text())
        if flags and int(flags[1], 8) & os.O_ACCMODE == os.O_WRONLY:
            return f"/proc/{pid}/fd/{fd}"
    raise AssertionError(f"no wake-up pipe among {ends}")


def waiting(pid: int) -> bool:
    """Whether the process is blocked in epoll_wait() (its select())."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text() in ("do_epoll_wait", "ep_poll")
    except OSError:
        return False


def test_worker_reaped_before_its_heartbeat_turn(devserve: StartDevserve, tmp_path: Path) -> None:
    """A worker's end reaches the master twice: SIGCHLD (through its wake-up pipe) and the
    end of the worker's heartbeat pipe. When one select() reports both, wake-up first, the
    worker is reaped and its pipe closed before its heartbeat's turn: that turn must be
    skipped, not read from a closed descriptor. Staged with the master stopped: its wake-up
    pipe is written, then the worker dies, so the next select() lists them in that order."""
    server = start_limitsapp(devserve, tmp_path, "--workers", "2")
    before = wait_workers(server, 2)
    wait_serving(server, before)
    victim, number = min(before.items())
    wake = wake_pipe(server.pid)
    master = psutil.Process(server.pid)
    victim_process = psutil.Process(victim)
    # Stopped while waiting in select() with nothing pending (after a heartbeat, the
    # victim's pipe could stay first in the kernel's ready list).
    wait_until(lambda: all(waiting(pid) for pid in (server.pid, *before)), 5, "all idle")
    server.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: master.status() == psutil.STATUS_STOPPED, 5, "the master to stop")
        descriptor = os.open(wake, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(descriptor, b"\0")  # a wake-up with no event: the loop reads it, no more
        finally:
            os.close(descriptor)
        victim_process.kill()
        wait_until(lambda: victim_process.status() == psutil.STATUS_ZOMBIE, 5, "the worker to end")
    finally:
        server.signal(signal.SIGCONT)
    after = wait_workers(server, 2, without={victim}, timeout=5)
    server.wait_for_log(
        rf"worker #{number} \(pid {victim}\) died \(killed by signal SIGKILL\); starting another"
    )
    assert "Traceback" not in server.log
    wait_serving(server, after)


# --- the limits ---


BOOT_FAILURE_INJECTION = """\
import os

import devserve._engine.worker


def run(self):
    os._exit(3)  # every worker dies before it is ready


devserve._engine.worker.WorkerProcess.run = run
"""


def test_workers_dying_at_start_make_the_master_back_off(
    devserve: StartDevserve, tmp_path: Path
) -> None:
    site = tmp_path / "site"  # injected at interpreter start, inherited by every fork
    site.mkdir()
    (site / "sitecustomize.py").write_text(BOOT_FAILURE_INJECTION)
    server = devserve(
        "-p", "0", "--workers", "1", "limitsapp:app", cwd=APPS, env_extra={"PYTHONPATH": str(site)}
    )
    server.wait_for_log(r"died while starting \(exit code 3\), 3 in a row: next attempt in 1 s")
    server.wait_for_log(r"4 in a row: next attempt in 2 s")
    started = time.monotonic()
    server.wait_for_log(r"5 in a row: next attempt in 4 s", timeout=10)
    # Backing off, not fork-looping: the fifth came after the 2 s wait, not at once.
    assert time.monotonic() - started > 1.0
    assert server.log.count("died while starting") == 5
    assert server.popen.poll() is None  # the master lives on


def test_limit_request_recycles_the_worker(devserve: StartDevserve, tmp_path: Path) -> None:
    server = start_limitsapp(devserve, tmp_path, "--workers", "1", "--limit-request", "3")
    pids = [pid_of(server) for _ in range(7)]
    first, second, third = pids[0], pids[3], pids[6]
    assert pids == [first] * 3 + [second] * 3 + [third], pids
    assert len({first, second, third}) == 3
    assert first != server.pid
    server.wait_for_log(r"worker #1 served 3 requests \(--limit-request\): recycled")
    server.wait_for_log(rf"worker #1 \(pid {first}\) recycled; starting another")
    assert "died" not in server.log


def test_limit_memory_soft_recycles_after_the_response(
    devserve: StartDevserve, tmp_path: Path
) -> None:
    server = start_limitsapp(devserve, tmp_path, "--workers", "1", "--limit-memory-soft", "100")
    (worker,) = wait_workers(server, 1)
    assert psutil.Process(worker).memory_info().rss < 100 * 1024 * 1024  # below at rest
    assert pid_of(server) == worker
    assert pid_of(server) == worker  # a small request does not recycle it

    response = server.request("/allocate?mib=200", timeout=20)
    assert response.status == 200
    assert response.text == str(worker)  # complete (Content-Length checked by http.client)

    replacement = wait_workers(server, 1, without={worker})
    server.wait_for_log(r"worker #1 uses \d+ MiB \(--limit-memory-soft 100\): recycled")
    server.wait_for_log(rf"worker #1 \(pid {worker}\) recycled; starting another")
    assert pid_of(server) in replacement


def test_limit_time_cpu_kills_only_the_busy_worker(devserve: StartDevserve, tmp_path: Path) -> None:
    server = start_limitsapp(devserve, tmp_path, "--workers", "2", "--limit-time-cpu", "1")
    before = wait_workers(server, 2)
    started = time.monotonic()
    thread, results = send_in_background(server, "/busy?seconds=20", timeout=20)
    try:
        busy = wait_started(tmp_path)
        assert busy in before
        (other,) = before.keys() - {busy}
        assert pid_of(server) != busy  # the other one serves meanwhile
    finally:
        thread.join(25)
    assert len(results) == 1 and isinstance(results[0], OSError), results
    assert time.monotonic() - started < 10  # not the 20 s of the loop

    after = wait_workers(server, 2, without={busy})
    assert other in after
    number = before[busy]
    server.wait_for_log(
        rf"worker #{number}: CPU time limit reached \(--limit-time-cpu 1\); exiting"
    )
    server.wait_for_log(rf"worker #{number} \(pid {busy}\) died \(exit code 1\); starting another")
    assert pid_of(server) in after


def test_limit_time_real_logs_the_stack_then_kills(devserve: StartDevserve, tmp_path: Path) -> None:
    server = start_limitsapp(devserve, tmp_path, "--workers", "1", "--limit-time-real", "2")
    (worker,) = wait_workers(server, 1)
    started = time.monotonic()
    thread, results = send_in_background(server, "/sleep?seconds=30", timeout=25)
    try:
        assert wait_started(tmp_path) == worker
        server.wait_for_log(
            rf"worker #1 \(pid {worker}\) silent for \d+ s \(--limit-time-real 2\): "
            "logging its stack, then killing it"
        )
        server.wait_for_log(rf"stacks of process {worker} ")
        server.wait_for_log(
            rf"worker #1 \(pid {worker}\) died \(killed by signal SIGKILL\); starting another"
        )
        assert time.monotonic() - started < 15  # well before the 30 s sleep
    finally:
        thread.join(30)
    assert len(results) == 1 and isinstance(results[0], OSError), results
    dump = log_block(server.log, f"stacks of process {worker} ")
    assert "GET /sleep?seconds=30" in dump, dump
    assert "limitsapp.py" in dump and "in sleep_here" in dump, dump
    replacement = wait_workers(server, 1, without={worker})
    assert pid_of(server) in replacement


# --- signals forwarded ---


def test_quit_and_usr1_reach_every_worker(devserve: StartDevserve, tmp_path: Path) -> None:
    server = start_limitsapp(devserve, tmp_path, "--workers", "2")
    found = wait_workers(server, 2)
    everyone = [server.pid, *found]

    server.signal(signal.SIGQUIT)
    for pid in everyone:
        server.wait_for_log(rf"stacks of process {pid} \(")
    assert all(server.log.count(f"stacks of process {pid} (") == 1 for pid in everyone)
    assert "# MainThread (main" in log_block(server.log, f"stacks of process {server.pid} (")
    assert server.log.count("stacks of process") == 3

    server.signal(signal.SIGUSR1)
    for pid in found:
        server.wait_for_log(rf"caches of process {pid} \(")
    assert pid_of(server) in found  # serving throughout
    assert workers(server) == found


# --- reloads ---


def test_hup_under_load_loses_no_request(devserve: StartDevserve, tmp_path: Path) -> None:
    server = start_limitsapp(devserve, tmp_path, "--workers", "2")
    before = wait_workers(server, 2)
    stop = threading.Event()
    failures: list[str] = []
    answered = [0]
    deadline = time.monotonic() + 40

    def hammer() -> None:
        for _ in range(5000):
            if stop.is_set() or time.monotonic() > deadline:
                return
            try:
                response = server.request("/", timeout=10)
                if response.status != 200 or response.text != "ok":
                    failures.append(f"status {response.status}: {response.text!r}")
                answered[0] += 1
            except (OSError, http.client.HTTPException) as error:
                failures.append(repr(error))

    clients = [threading.Thread(target=hammer) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        wait_until(lambda: answered[0] >= 20, 10, "the clients to be served")
        for number in range(1, 6):
            server.signal(signal.SIGHUP)
            wait_reloads(server, number)
            at = answered[0]
            wait_until(lambda a=at: answered[0] >= a + 20, 10, "requests after the reload")
    finally:
        stop.set()
        for client in clients:
            client.join(15)
    assert not any(client.is_alive() for client in clients)
    assert failures == []
    assert answered[0] >= 120
    after = wait_workers(server, 2, without=set(before))
    assert pid_of(server) in after
    assert title(server.pid) == "devserve: master"  # the same process, re-exec'd


BROKEN = 'raise RuntimeError("broken on purpose")\n'
WSGI = """\
import os

VERSION = {version!r}


def app(environ, start_response):
    body = f"{{VERSION}} {{os.getpid()}}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def version_and_pid(server: DevserveProcess) -> tuple[str, int]:
    response = server.request("/", timeout=10)
    assert response.status == 200, response.text
    version, pid = response.text.split()
    return version, int(pid)


@pytest.mark.parametrize("mode", ["warm", "exec"])
def test_broken_code_keeps_the_old_workers(
    devserve: StartDevserve, tmp_path: Path, mode: str
) -> None:
    package = tmp_path / "site_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    module = package / "wsgi.py"
    module.write_text(WSGI.format(version="one"))
    server = devserve(
        *("-p", "0", "--workers", "2", "--dev", "reload", "--reload-mode", mode),
        "site_pkg.wsgi:app",
        cwd=tmp_path,
    )
    server.wait_for_log("watching site_pkg with")
    old = wait_workers(server, 2)
    assert all(version_and_pid(server) in {("one", pid) for pid in old} for _ in range(6))

    write_file(module, BROKEN + WSGI.format(version="two"), atomic=True)
    wait_reloads(server, 1)
    server.wait_for_log("the new code did not load: the workers of the previous code go on")
    assert "broken on purpose" in server.log
    for _ in range(6):
        version, pid = version_and_pid(server)
        assert (version, pid in old) == ("one", True)
    assert workers(server) == old
    wait_watching(server, images=2)

    write_file(module, WSGI.format(version="three"), atomic=True)
    wait_reloads(server, 2)
    new = wait_workers(server, 2, without=set(old))
    for _ in range(6):
        version, pid = version_and_pid(server)
        assert (version, pid in new) == ("three", True)
    assert count_reloads(server) == 2


# --- stopping ---


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_stop_lets_the_running_request_finish(
    devserve: StartDevserve, tmp_path: Path, signum: int
) -> None:
    server = start_limitsapp(devserve, tmp_path, "--workers", "2")
    wait_workers(server, 2)
    thread, results = send_in_background(server, "/sleep?seconds=1", timeout=15)
    try:
        worker = wait_started(tmp_path)
        server.signal(signum)
        server.wait_for_log("stopping: waiting up to 5s for 2 worker")
        assert server.wait_exit() == ExitCode.OK
    finally:
        thread.join(15)
    assert len(results) == 1 and isinstance(results[0], Response), results
    assert (results[0].status, results[0].text) == (200, f"slept 1 by {worker}")
    wait_until(lambda: group_gone(server.pid), 5, "every process of the group to end")
    assert "killed" not in server.log and "stopped" in server.log


def test_new_clients_are_refused_during_a_graceful_stop(
    devserve: StartDevserve, tmp_path: Path
) -> None:
    server = start_limitsapp(devserve, tmp_path, "--workers", "2")
    wait_workers(server, 2)
    thread, results = send_in_background(server, "/sleep?seconds=3", timeout=15)
    try:
        wait_started(tmp_path)
        server.signal(signal.SIGTERM)
        server.wait_for_log("stopping: waiting up to")
        with pytest.raises(ConnectionRefusedError):
            server.request("/pid", timeout=5)
        assert server.wait_exit() == ExitCode.OK
    finally:
        thread.join(15)
    assert len(results) == 1 and isinstance(results[0], Response), results


def test_ctrl_c_to_the_whole_group_stops_cleanly(devserve: StartDevserve, tmp_path: Path) -> None:
    """A terminal's CTRL-C signals every process of the group: the workers leave the stop
    to the master, which stops them, and no replacement is started."""
    server = start_limitsapp(devserve, tmp_path, "--workers", "2")
    wait_workers(server, 2)
    os.killpg(server.pid, signal.SIGINT)
    assert server.wait_exit(timeout=5) == ExitCode.OK
    wait_until(lambda: group_gone(server.pid), 5, "every process of the group to end")
    assert "starting another" not in server.log and "killed" not in server.log


def test_an_idle_worker_outlives_a_short_real_time_limit(
    devserve: StartDevserve, tmp_path: Path
) -> None:
    server = start_limitsapp(devserve, tmp_path, "--workers", "1", "--limit-time-real", "1")
    (worker,) = wait_workers(server, 1)
    # Idle for 4 s, four times the limit: no request runs, so none is past it.
    assert not happens_within(lambda: "silent for" in server.log, 4)
    assert workers(server) == {worker: 1}


def test_usr1_in_a_worker_reports_the_app_functools_caches(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", "--workers", "1", "cacheapp:app", cwd=APPS)
    (worker,) = wait_workers(server, 1)
    assert server.request("/cube?n=2").text == "8"
    server.signal(signal.SIGUSR1)
    server.wait_for_log(rf"caches of process {worker} \(")
    assert "cacheapp.cube" in log_block(server.log, f"caches of process {worker} (")


def test_second_term_stops_at_once(devserve: StartDevserve, tmp_path: Path) -> None:
    server = start_limitsapp(devserve, tmp_path, "--workers", "2")
    wait_workers(server, 2)
    thread, results = send_in_background(server, "/sleep?seconds=20", timeout=25)
    try:
        wait_started(tmp_path)
        server.signal(signal.SIGTERM)
        server.wait_for_log("send a second signal to stop at once")
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert server.wait_exit(timeout=5) == ExitCode.FORCED
        assert time.monotonic() - started < 3
    finally:
        thread.join(30)
    assert len(results) == 1 and isinstance(results[0], OSError), results
    assert "1 worker(s) killed with their request cut short" in server.log
    wait_until(lambda: group_gone(server.pid), 5, "every process of the group to end")


def test_werkzeug_debugger_refuses_workers(env: dict[str, str]) -> None:
    result = run_cli(["--dev", "werkzeug", "--workers", "2", "limitsapp:app"], cwd=APPS, env=env)
    assert_one_line_error(result, ExitCode.CONFIG, "--workers", "--dev werkzeug")
