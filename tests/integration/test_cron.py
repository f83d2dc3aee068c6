"""@cron jobs on the real CLI in threaded mode: on time, never overlapping, failing and
overrunning jobs, cron off, and stops and reloads with a job running.

The jobs are those of the fixture addon ``apps/cronaddons/crondemo``: each appends marks
("<word> <thread> <time>") to a file, which the tests read.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import time
from pathlib import Path

import pytest

from devserve.errors import ExitCode
from tests.integration.conftest import StartDevserve
from tests.integration.harness import (
    APPS,
    DevserveProcess,
    devserve_command,
    happens_within,
    wait_reloads,
    wait_until,
)

CRON_ADDONS = APPS / "cronaddons"


class Marks:
    """The marks file the fixture's jobs write."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[tuple[str, str, float]]:
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [(word, thread, float(at)) for word, thread, at in map(str.split, lines)]

    def times(self, word: str) -> list[float]:
        return [at for said, _thread, at in self.read() if said == word]

    def count(self, word: str) -> int:
        return len(self.times(word))

    def wait_for(self, word: str, count: int, timeout: float = 10.0) -> list[float]:
        """The times of the first ``count`` marks ``word``, once there are that many."""
        return wait_until(
            lambda: self.times(word)[:count] if self.count(word) >= count else None,
            timeout,
            f"{count} {word!r} mark(s)",
        )


@pytest.fixture
def marks(tmp_path: Path) -> Marks:
    return Marks(tmp_path / "marks")


# Starts devserve with INT ignored, as a script's background job is (`sh -c 'devserve &'`).
INT_IGNORED = ["sh", "-c", 'trap "" INT; exec "$0" "$@"', *devserve_command()]


def serve_jobs(
    devserve: StartDevserve,
    marks: Marks,
    jobs: str,
    *options: str,
    command: list[str] | None = None,
) -> DevserveProcess:
    return devserve(
        "-p",
        "0",
        *options,
        str(CRON_ADDONS),
        env_extra={"CRONDEMO_LOG": str(marks.path), "CRONDEMO_JOBS": jobs},
        command=command,
    )


def test_a_job_fires_on_time_again_and_again(devserve: StartDevserve, marks: Marks) -> None:
    server = serve_jobs(devserve, marks, "tick")
    assert "cron: 1 job on 1 thread" in server.wait_for_log(r"cron: .*").group(0)
    ticks = marks.wait_for("tick", 8)
    # The first run comes within the jitter (at most the 0.3 s interval) of the start.
    assert ticks[0] - marks.times("boot")[0] < 3.0
    gaps = [later - earlier for earlier, later in itertools.pairwise(ticks)]
    assert all(0.15 <= gap <= 1.0 for gap in gaps), gaps  # never a burst, never lost
    assert 0.25 <= sum(gaps) / len(gaps) <= 0.45, gaps  # the machine is shared: loosely 0.3
    assert server.request("/").status == 404  # the server serves meanwhile (no route here)


def test_a_slow_job_never_overlaps_itself(devserve: StartDevserve, marks: Marks) -> None:
    # 1 s runs every 0.2 s, with a second thread free most of the time (tick is quick).
    server = serve_jobs(devserve, marks, "slow,tick")
    server.wait_for_log(r"cron: 2 jobs on 2 threads")
    marks.wait_for("end", 3, timeout=15)
    runs = [(word, at) for word, _thread, at in marks.read() if word in ("start", "end")]
    words = [word for word, _at in runs]
    assert words == ["start", "end"] * (len(words) // 2) + ["start"] * (len(words) % 2), runs
    times = [at for _word, at in runs]
    assert times == sorted(times)
    # Due again while it ran: the next run starts at the next slot of its rhythm, within
    # one interval of the end (loosely: the machine is shared).
    ends, starts = times[1::2], times[2::2]
    assert all(0 <= start - end <= 0.8 for end, start in zip(ends, starts, strict=False)), runs


def test_a_failing_job_logs_its_traceback_and_runs_again(
    devserve: StartDevserve, marks: Marks
) -> None:
    server = serve_jobs(devserve, marks, "fail")
    marks.wait_for("fail", 3)
    wait_until(lambda: server.log.count("cron job crondemo.fail failed") >= 2, 10, "2 failures")
    assert re.search(
        r"ERROR devserve\.cron: cron job crondemo\.fail failed\nTraceback .*\n"
        r"(.*\n)*?.*in fail\n(.*\n)*?RuntimeError: crondemo failure",
        server.log,
    ), server.log
    assert server.request("/").status == 404
    assert server.popen.poll() is None


@pytest.mark.parametrize(
    "options", [("--limit-time-real-cron", "1"), ("--limit-time-real", "1")], ids=["own", "-1"]
)
def test_an_overrunning_job_logs_its_stack_once(
    devserve: StartDevserve, marks: Marks, options: tuple[str, ...]
) -> None:
    server = serve_jobs(devserve, marks, "overrun", *options)
    warned = server.wait_for_log(
        r"WARNING devserve\.cron: cron job crondemo\.overrun has run for (\d+\.\d)s, past the "
        r"cron time limit \(1s\); it goes on:\n# devserve\.cron\.0 \(cron, ident \d+\): "
        r"job crondemo\.overrun, running for \d+\.\ds\n",
        timeout=10,
    )
    assert 1.0 <= float(warned[1]) < 2.0, warned[0]
    marks.wait_for("end", 1)  # the job went on to its end (2.5 s)
    log = server.log
    stack = log[warned.end() :]
    assert re.match(r'(  File ".*\n.*\n)*?  File ".*crondemo/__init__\.py", .* in overrun\n', stack)
    assert "in sleep_past_the_limit\n    time.sleep(seconds)" in stack
    assert log.count("past the cron time limit") == 1  # once per run


def test_no_cron_thread_runs_nothing(devserve: StartDevserve, marks: Marks) -> None:
    server = serve_jobs(devserve, marks, "tick", "--max-cron-threads", "0")
    server.wait_for_log(r"cron: 1 job not run \(no cron thread\)")
    assert not happens_within(lambda: marks.count("tick"), 1.5)
    assert "devserve.cron." not in server.log


def test_a_stop_lets_a_running_job_finish_within_the_grace(
    devserve: StartDevserve, marks: Marks
) -> None:
    server = serve_jobs(devserve, marks, "slow", "--shutdown-grace", "5")
    marks.wait_for("start", 1)
    server.signal(signal.SIGTERM)
    assert server.wait_exit(10) == 0
    assert marks.count("end") == marks.count("start")
    assert "abandoned" not in server.log


def test_a_hanging_job_holds_neither_a_reload_nor_a_stop(
    devserve: StartDevserve, marks: Marks
) -> None:
    server = serve_jobs(devserve, marks, "hang", "--reload-grace", "1", "--shutdown-grace", "1")
    marks.wait_for("start", 1)
    sent = time.monotonic()
    server.signal(signal.SIGHUP)
    wait_reloads(server, 1)
    assert time.monotonic() - sent < 8
    assert re.search(r"cron job crondemo\.hang still running after \d+\.\ds: abandoned", server.log)
    # The new image runs the job again.
    marks.wait_for("boot", 2)
    wait_until(lambda: marks.read()[-1][0] == "start", 10, "a start in the new image")

    sent = time.monotonic()
    server.signal(signal.SIGTERM)
    assert server.wait_exit(10) == 0
    assert time.monotonic() - sent < 8
    assert server.log.count("abandoned") == 2


@pytest.mark.parametrize("interrupt", ["default", "ignored-at-start"])
def test_a_second_stop_signal_ends_the_wait_for_a_job(
    devserve: StartDevserve, marks: Marks, interrupt: str
) -> None:
    command = INT_IGNORED if interrupt == "ignored-at-start" else None
    server = serve_jobs(devserve, marks, "hang", "--shutdown-grace", "30", command=command)
    marks.wait_for("start", 1)
    server.signal(signal.SIGTERM)
    server.wait_for_log(r"cron: waiting up to 30s for 1 running job: crondemo\.hang\n")
    server.signal(signal.SIGINT)
    assert server.wait_exit(10) == ExitCode.FORCED
    assert "forced stop: running cron jobs cut short" in server.log


# --- prefork: cron workers ---


def cron_workers(server: DevserveProcess) -> dict[int, str]:
    """The master's children titled as cron workers: {pid: title}."""
    import psutil

    found = {}
    for child in psutil.Process(server.pid).children():
        try:
            title = " ".join(part for part in child.cmdline() if part)
        except psutil.Error:
            continue
        if title.startswith("devserve: cron worker #"):
            found[child.pid] = title
    return found


def assert_never_overlapping(marks: Marks) -> list[tuple[str, float]]:
    runs = [(word, at) for word, _thread, at in marks.read() if word in ("start", "end")]
    words = [word for word, _at in runs]
    assert words == ["start", "end"] * (len(words) // 2) + ["start"] * (len(words) % 2), runs
    return runs


def test_prefork_runs_the_jobs_in_cron_workers(devserve: StartDevserve, marks: Marks) -> None:
    server = serve_jobs(devserve, marks, "slow,tick", "--workers", "1", "--status")
    found = wait_until(lambda: len(cron_workers(server)) == 2 and cron_workers(server), 10, "2")
    assert sorted(title.split(" [")[0] for title in found.values()) == [
        "devserve: cron worker #1",
        "devserve: cron worker #2",
    ]
    listed = json.loads(server.request("/__devserve__/status").body)["workers"]
    crons = [worker for worker in listed if worker["kind"] == "cron"]
    assert {worker["pid"] for worker in crons} == set(found)  # the status lists them too
    assert all(worker["rss_mib"] > 0 and worker["age_s"] >= 0 for worker in crons)
    marks.wait_for("tick", 3)
    marks.wait_for("end", 2, timeout=15)
    assert_never_overlapping(marks)  # one job, one worker: never two runs at once
    # A cron worker that dies is replaced.
    victim = next(iter(found))
    os.kill(victim, signal.SIGKILL)
    server.wait_for_log(r"cron worker #\d died \(killed by signal SIGKILL\); starting another")
    wait_until(
        lambda: len(cron_workers(server)) == 2 and victim not in cron_workers(server),
        10,
        "a new cron worker",
    )
    before = marks.count("tick")
    wait_until(lambda: marks.count("tick") > before + 2, 10, "ticks from the new worker")


def test_prefork_reload_never_runs_a_job_twice_at_once(
    devserve: StartDevserve, marks: Marks
) -> None:
    server = serve_jobs(devserve, marks, "slow", "--workers", "1")
    marks.wait_for("start", 2, timeout=15)
    for count in (1, 2):
        server.signal(signal.SIGHUP)
        wait_reloads(server, count)
    marks.wait_for("boot", 3, timeout=15)  # the new image loaded the addon
    started = marks.count("start")
    wait_until(lambda: marks.count("start") > started + 1, 15, "the job running again")
    assert_never_overlapping(marks)


def test_prefork_stop_ends_the_cron_workers(devserve: StartDevserve, marks: Marks) -> None:
    server = serve_jobs(devserve, marks, "tick", "--workers", "1")
    workers = wait_until(lambda: cron_workers(server), 10, "a cron worker")
    marks.wait_for("tick", 1)
    server.signal(signal.SIGTERM)
    assert server.wait_exit(15) == ExitCode.OK
    import psutil

    assert not any(psutil.pid_exists(pid) for pid in workers)
