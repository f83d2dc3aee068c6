"""kill -QUIT dumps every thread's stack; kill -USR1/-USR2 report cache statistics."""

from __future__ import annotations

import re
import signal
import threading
from pathlib import Path

from tests.integration.conftest import StartDevserve
from tests.integration.harness import APPS, EXAMPLE_ADDONS, DevserveProcess, wait_until


def _report_rows(server: DevserveProcess, title_count: int) -> dict[str, list[str]]:
    """The rows of the ``title_count``-th cache report in the log, by cache name."""
    wait_until(lambda: server.log.count("caches of process") >= title_count, 10, "a cache report")
    report = server.log.split("caches of process")[title_count]
    rows = {}
    for line in report.splitlines()[2:]:
        cells = line.split()
        if not cells or re.match(r"\d{4}-\d\d-\d\d", cells[0]):
            break
        rows[cells[0]] = cells[1:]
    return rows


def test_quit_dumps_the_stack_of_a_running_request(devserve: StartDevserve, tmp_path: Path) -> None:
    marker = tmp_path / "slow-started"
    server = devserve(
        "-p", "0", "slowapp:app", cwd=APPS, env_extra={"SLOWAPP_STARTED": str(marker)}
    )
    slow = threading.Thread(target=lambda: server.request("/slow?seconds=3", timeout=10))
    slow.start()
    try:
        wait_until(marker.exists, 10, "the slow request to run")
        for count in (1, 2, 3):  # several in a row: one dump each
            server.signal(signal.SIGQUIT)
            wait_until(lambda c=count: server.log.count("stacks of process") >= c, 10, "a dump")
        dump = server.log.split("stacks of process")[1]
        assert re.search(
            r"\(request, ident \d+\): GET /slow\?seconds=3 from 127\.0\.0\.1, "
            r"running for \d+\.\d+s",
            dump,
        ), dump
        assert "slowapp.py" in dump and "time.sleep(seconds)" in dump  # the frame, its line
        assert "# MainThread (main" in dump
        assert server.request("/").text == "ok"  # serving throughout
    finally:
        slow.join(15)


def test_usr1_reports_cached_and_lru_cache_statistics(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", "cacheapp:app", cwd=APPS)
    for path in ("/square?n=2", "/square?n=2", "/square?n=2", "/square?n=3", "/square?n=list"):
        assert server.request(path).status == 200
    for path in ("/cube?n=2", "/cube?n=2"):
        assert server.request(path).status == 200
    server.signal(signal.SIGUSR1)
    rows = _report_rows(server, 1)
    # entries, hits, misses, errors, hit ratio, compute
    assert rows["cacheapp.square"][:5] == ["2", "2", "2", "1", "50%"], rows
    assert rows["cacheapp.cube"][:5] == ["1", "1", "1", "0", "50%"], rows
    assert server.request("/square?n=2").text == "4"


def test_usr2_adds_memory_sizes(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", "cacheapp:app", cwd=APPS)
    assert server.request("/square?n=7").text == "49"
    server.signal(signal.SIGUSR2)
    wait_until(lambda: "memory" in server.log, 10, "the report with sizes")
    rows = _report_rows(server, 1)
    # entries, memory (value, unit), hits...
    assert rows["cacheapp.square"][0] == "1"
    assert re.fullmatch(r"\d+(\.\d)?", rows["cacheapp.square"][1]), rows
    assert rows["cacheapp.square"][2] in ("B", "KiB"), rows


def test_the_example_addon_has_caches_to_report(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", str(EXAMPLE_ADDONS))
    assert "832040" in server.request("/hello/fibonacci/30").text
    server.signal(signal.SIGUSR1)
    rows = _report_rows(server, 1)
    assert rows["devserve_addons.hello.controllers.fibonacci"][:3] == ["31", "28", "31"], rows


def test_a_second_signal_stops_a_long_report(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", "cacheapp:app", cwd=APPS)
    assert server.request("/big").text == "300000"
    server.signal(signal.SIGUSR2)  # sizing 300,000 objects takes a while...
    server.signal(signal.SIGUSR1)  # ...so this one finds it running
    server.wait_for_log("stopping the cache report under way")
    server.wait_for_log("cache report stopped")
    assert "caches of process" not in server.log
    server.signal(signal.SIGUSR1)  # the next one reports again
    rows = _report_rows(server, 1)
    assert rows["cacheapp.big"][:3] == ["1", "0", "1"], rows
