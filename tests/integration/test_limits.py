"""Resource limits in threaded mode, on the real CLI: a request past --limit-time-real or
memory above --limit-memory-soft logs the stacks and reloads in place once the other
requests are done; --limit-memory-hard caps the address space."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import time
from pathlib import Path

import psutil

from tests.integration.conftest import StartDevserve
from tests.integration.harness import (
    APPS,
    Response,
    count_reloads,
    happens_within,
    wait_reloads,
    wait_until,
)

MIB = 1 << 20


def _get(server_request: object, path: str) -> Response | str:
    """The response, or the name of the error that ended the request."""
    try:
        return server_request(path, timeout=40)  # type: ignore[operator, no-any-return]
    except (OSError, http.client.HTTPException) as error:
        return type(error).__name__


def test_request_past_the_real_time_limit_logs_its_stack_then_reloads(
    devserve: StartDevserve, tmp_path: Path
) -> None:
    marker = tmp_path / "slow-started"
    server = devserve(
        "-p",
        "0",
        "--limit-time-real",
        "1",
        "slowapp:app",
        cwd=APPS,
        env_extra={"SLOWAPP_STARTED": str(marker)},
    )
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        stuck = pool.submit(_get, server.request, "/slow?seconds=30")
        wait_until(marker.exists, 10, "the stuck request to run")
        marker.unlink()
        # Within the limit, still running when the stuck one is caught: the reload waits.
        other = pool.submit(_get, server.request, "/slow?seconds=1.5")
        wait_until(marker.exists, 10, "the second request to run")
        wait_reloads(server, 1, timeout=15)
        log = server.log
        assert "a request ran past --limit-time-real 1s" in log
        dump = log.split("stacks of process")[1]
        assert "GET /slow?seconds=30" in dump and "time.sleep(seconds)" in dump
        assert "seconds=1.5" not in dump  # only the offender's stack
        finished = other.result(timeout=20)
        assert isinstance(finished, Response) and finished.text == "slept 1.5"
        assert isinstance(stuck.result(timeout=20), str)  # cut by the reload
    assert server.popen.poll() is None  # the same process, re-exec'd
    assert server.request("/").text == "ok"


def test_new_requests_are_answered_while_a_limit_reload_waits(
    devserve: StartDevserve, tmp_path: Path
) -> None:
    marker = tmp_path / "slow-started"
    server = devserve(
        "-p",
        "0",
        "--limit-time-real",
        "4",
        "slowapp:app",
        cwd=APPS,
        env_extra={"SLOWAPP_STARTED": str(marker)},
    )
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        pool.submit(_get, server.request, "/slow?seconds=30")
        wait_until(marker.exists, 10, "the stuck request to run")
        marker.unlink()
        # Started 2 s later, within the limit when the stuck one passes it: waited for.
        assert not happens_within(lambda: count_reloads(server), 2.0)
        other = pool.submit(_get, server.request, "/slow?seconds=4")
        wait_until(marker.exists, 10, "the second request to run")
        server.wait_for_log("reloading once the other requests finish", timeout=10)
        for _ in range(5):  # meanwhile, the server answers as usual
            started = time.monotonic()
            assert server.request("/", timeout=5).text == "ok"
            assert time.monotonic() - started < 1.0
        assert count_reloads(server) == 0
        finished = other.result(timeout=20)
        assert isinstance(finished, Response) and finished.text == "slept 4.0"
        wait_reloads(server, 1, timeout=15)


def test_memory_above_the_soft_limit_reloads_once(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", "--limit-memory-soft", "150", "slowapp:app", cwd=APPS)
    assert psutil.Process(server.pid).memory_info().rss < 150 * MIB
    assert server.request("/hold?mib=200").text == "held 200"  # answered in full first
    wait_reloads(server, 1, timeout=15)
    assert "MiB used, above --limit-memory-soft 150" in server.log
    wait_until(lambda: psutil.Process(server.pid).memory_info().rss < 150 * MIB, 10, "memory")
    assert server.request("/").text == "ok"
    # The fresh image is below the limit: no reload loop (limits are checked every second).
    assert not happens_within(lambda: count_reloads(server) > 1, 2.5)


def test_hard_memory_limit_caps_the_address_space(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", "--limit-memory-hard", "400", "slowapp:app", cwd=APPS)
    soft, _hard = psutil.Process(server.pid).rlimit(psutil.RLIMIT_AS)
    assert soft == 400 * MIB
    # An allocation beyond it fails inside the process (MemoryError: a 500), which serves on.
    assert server.request("/hold?mib=600").status == 500
    assert "MemoryError" in server.log
    assert server.request("/").text == "ok"


def test_no_memory_limit_with_zero(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", "--limit-memory-hard", "0", "slowapp:app", cwd=APPS)
    soft, _hard = psutil.Process(server.pid).rlimit(psutil.RLIMIT_AS)
    assert soft == psutil.RLIM_INFINITY


def test_request_threads_fit_in_the_address_space(devserve: StartDevserve) -> None:
    """Under a small --limit-memory-hard, the request threads are capped to what the address
    space leaves (each reserves its stack): requests beyond wait their turn, none fails."""
    server = devserve("-p", "0", "--limit-memory-hard", "250", "slowapp:app", cwd=APPS)
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda _: _get(server.request, "/slow?seconds=0.5"), range(40)))
    statuses = [a.status if isinstance(a, Response) else a for a in answers]
    assert statuses == [200] * 40, statuses
    assert "cannot start a request thread" not in server.log
    assert server.request("/").text == "ok"


def test_large_request_bodies_do_not_pile_up(devserve: StartDevserve) -> None:
    """Each request's body (and what the app parsed of it) goes with the request: it is not
    left for the cyclic collector, which would let sequential large requests pile up."""
    server = devserve("-p", "0", "jsonapp:app", cwd=APPS)
    body = json.dumps({"x": "a" * (30 * MIB)}).encode()
    peak = 0
    for _ in range(20):
        connection = http.client.HTTPConnection(server.host, server.port, timeout=60)
        try:
            connection.request("POST", "/", body=body, headers={"Content-Type": "text/json"})
            assert connection.getresponse().read() == str(30 * MIB).encode()
        finally:
            connection.close()
        peak = max(peak, psutil.Process(server.pid).memory_info().rss)
    assert peak < 400 * MIB, f"{peak / MIB:.0f} MiB"
