"""devserve.cron: the decorator, the served jobs, the schedule (on a fake clock) and the
runner's threads (on short real intervals)."""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devserve import addons, app, cron, debug, runtime
from devserve.config import Settings
from devserve.cron import CronRunner, Job, Schedule
from devserve.errors import AppLoadError
from tests.unit.conftest import WriteAddon

WAIT = 10.0  # seconds a test waits for what must happen


@pytest.fixture(autouse=True)
def _isolate_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cron, "_jobs", dict(cron._jobs))


def no_arguments() -> None:
    pass


def takes_an_argument(value: int) -> None:
    pass


def has_defaults(value: int = 1) -> None:
    pass


# --- @cron ---


def test_cron_registers_a_job_under_the_function_path() -> None:
    assert cron.cron(interval=5)(no_arguments) is no_arguments
    (job,) = cron._jobs.values()
    assert (job.function, job.interval, job.name) == (no_arguments, 5.0, f"{__name__}.no_arguments")


def test_cron_name_and_fractional_interval() -> None:
    cron.cron(interval=0.25, name="purge sessions")(has_defaults)
    (job,) = cron._jobs.values()
    assert (job.interval, job.name) == (0.25, "purge sessions")


def test_decorating_again_replaces_the_job() -> None:
    cron.cron(interval=5)(no_arguments)
    cron.cron(interval=7)(no_arguments)
    assert [job.interval for job in cron._jobs.values()] == [7.0]


@pytest.mark.parametrize("interval", [0, -1, -0.5, math.nan, math.inf])
def test_an_interval_that_is_not_positive_is_refused(interval: float) -> None:
    with pytest.raises(ValueError, match=r"@cron interval must be a positive number of seconds"):
        cron.cron(interval=interval)(no_arguments)
    assert not cron._jobs


@pytest.mark.parametrize("interval", ["60", None, True, [1]])
def test_an_interval_that_is_not_a_number_is_refused(interval: object) -> None:
    with pytest.raises(TypeError, match=r"@cron interval must be a number of seconds, not \w+"):
        cron.cron(interval=interval)(no_arguments)  # type: ignore[arg-type]


def test_the_error_names_the_function_and_where_it_is() -> None:
    with pytest.raises(ValueError) as caught:
        cron.cron(interval=0)(no_arguments)
    assert f"{__name__}.no_arguments ({__file__}, line " in str(caught.value)


def test_a_bare_cron_asks_for_an_interval() -> None:
    with pytest.raises(TypeError, match=r"@cron needs an interval: @cron\(interval=60\) on .*"):
        cron.cron(no_arguments)  # type: ignore[arg-type]


def test_cron_goes_on_module_level_functions_only() -> None:
    def nested() -> None:
        pass

    class Jobs:
        def method(self) -> None:
            pass

    for target in (nested, Jobs.method):
        with pytest.raises(TypeError, match="@cron goes on a module-level function"):
            cron.cron(interval=1)(target)
    with pytest.raises(TypeError, match="@cron goes on a function, not a type"):
        cron.cron(interval=1)(Jobs)


def test_a_job_is_called_without_arguments() -> None:
    with pytest.raises(TypeError, match="a @cron function is called with no arguments"):
        cron.cron(interval=1)(takes_an_argument)


@pytest.mark.parametrize("name", ["", "  ", 3])
def test_a_name_must_be_a_non_empty_string(name: object) -> None:
    with pytest.raises(TypeError, match="@cron name must be a non-empty string"):
        cron.cron(interval=1, name=name)(no_arguments)  # type: ignore[arg-type]


# --- the jobs of the addons served ---

JOBS_CODE = """
from devserve.cron import cron

@cron(interval=60)
def first():
    pass

@cron(interval=30, name="{name} second")
def second():
    pass
"""


def import_addons_with_jobs(tmp_path: Path, write_addon: WriteAddon, *names: str) -> None:
    for name in names:
        write_addon(tmp_path, name, code=JOBS_CODE.format(name=name))
    found = addons.discover([str(tmp_path)])
    addons.import_addons(found, [str(tmp_path)])


def test_served_jobs_are_those_of_the_addons_served(
    tmp_path: Path, write_addon: WriteAddon, unique: Callable[[str], str]
) -> None:
    served, other = unique("served"), unique("other")
    import_addons_with_jobs(tmp_path, write_addon, served, other)
    cron.cron(interval=1)(no_arguments)  # not in an addon
    jobs = cron.served_jobs([served])
    assert [(job.name, job.interval) for job in jobs] == [
        (f"{served}.first", 60.0),
        (f"{served} second", 30.0),
    ]
    assert len(cron.served_jobs([served, other])) == 4
    assert cron.served_jobs([]) == []


def test_a_bad_job_fails_the_addon_import_naming_it(
    tmp_path: Path, write_addon: WriteAddon, unique: Callable[[str], str]
) -> None:
    name = unique("badjob")
    write_addon(
        tmp_path,
        name,
        code="from devserve.cron import cron\n\n@cron(interval=-5)\ndef purge(): ...\n",
    )
    with pytest.raises(AppLoadError) as caught:
        addons.import_addons(addons.discover([str(tmp_path)]), [str(tmp_path)])
    message = str(caught.value)
    assert f"addon {name!r} failed to import: ValueError: @cron interval must be" in message
    assert f"devserve_addons.{name}.purge ({tmp_path / name / '__init__.py'}, line 3)" in message


def test_the_server_runs_the_jobs_of_the_addons_it_serves(
    tmp_path: Path, write_addon: WriteAddon, unique: Callable[[str], str]
) -> None:
    name = unique("served")
    import_addons_with_jobs(tmp_path, write_addon, name)
    settings = Settings(addons_path=(str(tmp_path),), max_cron_threads=3, limit_time_real=9)
    served = app.load(settings)
    assert [addon.name for addon in served.addons] == [name]
    runner = runtime._cron_runner(settings, served, False)
    assert isinstance(runner, CronRunner)
    assert [job.name for job in runner.jobs] == [f"{name}.first", f"{name} second"]
    assert (runner.threads, runner.time_limit) == (3, 9.0)
    # Prefork runs cron in its own workers; a plain WSGI app has no jobs; gevent mode none.
    prefork = Settings(addons_path=(str(tmp_path),), workers=2)
    assert runtime._cron_runner(prefork, served, False) is None
    plain = app.Served(served.app, imported=served.app)
    assert runtime._cron_runner(Settings(app="mod:app"), plain, False) is None
    assert runtime._cron_runner(settings, served, True) is None


def test_partition_deals_the_jobs_round_robin() -> None:
    jobs = [Job(no_arguments, 1, str(number)) for number in range(5)]
    groups = cron.partition(jobs, 2)
    assert [[job.name for job in group] for group in groups] == [["0", "2", "4"], ["1", "3"]]
    assert [len(group) for group in cron.partition(jobs[:1], 3)] == [1, 0, 0]


@pytest.mark.parametrize(("own", "expected"), [(-1.0, 120.0), (0.0, 0.0), (5.0, 5.0)])
def test_time_limit_minus_one_is_limit_time_real(own: float, expected: float) -> None:
    settings = Settings(limit_time_real_cron=own, limit_time_real=120.0)
    assert cron.time_limit(settings) == expected


# --- the schedule, on a fake clock ---


def job(interval: float, name: str = "job") -> Job:
    return Job(no_arguments, interval, name)


def test_first_runs_are_jittered_by_at_most_min_interval_one_second() -> None:
    asked: list[float] = []

    def jitter(most: float) -> float:
        asked.append(most)
        return most / 2

    quick, slow = job(0.3), job(60)
    schedule = Schedule([quick, slow], now=100.0, jitter=jitter)
    assert asked == [0.3, cron.MAX_JITTER]
    assert schedule.planned(quick) == pytest.approx(100.15)
    assert schedule.planned(slow) == 100.5


def test_nothing_is_claimed_before_its_time() -> None:
    only = job(1)
    schedule = Schedule([only], now=10.0, jitter=lambda most: 0.0)
    assert schedule.next_due() == 10.0
    assert schedule.claim(9.99) is None
    assert schedule.claim(10.0) is only


def test_a_running_job_is_never_due() -> None:
    only = job(1)
    schedule = Schedule([only], now=10.0, jitter=lambda most: 0.0)
    assert schedule.claim(10.0) is only
    assert schedule.claim(50.0) is None  # long overdue, but running
    assert schedule.next_due() is None
    schedule.release(only, 50.5)
    assert schedule.claim(51.0) is only


def test_the_rhythm_does_not_drift() -> None:
    only = job(1)
    schedule = Schedule([only], now=10.0, jitter=lambda most: 0.0)
    schedule.claim(10.2)  # claimed late
    assert schedule.release(only, 10.6) == 11.0  # from the planned time, not the end
    schedule.claim(11.0)
    assert schedule.release(only, 11.01) == 12.0


def test_missed_slots_are_skipped_not_run_in_a_burst() -> None:
    only = job(1)
    schedule = Schedule([only], now=10.0, jitter=lambda most: 0.0)
    schedule.claim(10.0)
    assert schedule.release(only, 13.5) == 14.0
    assert schedule.claim(13.9) is None
    assert schedule.claim(14.0) is only


def test_the_job_planned_earliest_is_claimed_first() -> None:
    early, late = job(5, "early"), job(1, "late")
    offsets = iter([0.9, 0.1])
    schedule = Schedule([late, early], now=0.0, jitter=lambda most: next(offsets))
    assert schedule.claim(2.0) is early
    assert schedule.claim(2.0) is late
    assert schedule.claim(2.0) is None


@given(
    interval=st.floats(0.01, 1000),
    jitter=st.floats(0, 1),
    ran=st.lists(st.floats(0, 5000), min_size=1, max_size=5),
)
def test_release_lands_on_the_rhythm_within_one_interval(
    interval: float, jitter: float, ran: list[float]
) -> None:
    only = job(interval)
    schedule = Schedule([only], now=0.0, jitter=lambda most: jitter * most)
    first = schedule.planned(only)
    now = first
    for duration in ran:
        now = max(now, schedule.planned(only))
        assert schedule.claim(now) is only
        now += duration
        following = schedule.release(only, now)
        assert now < following <= now + interval * (1 + 1e-9)
        slots = (following - first) / interval
        assert slots == pytest.approx(round(slots), abs=1e-6)


# --- the runner's threads ---


class Calls:
    """What jobs did, with a condition to wait on."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.names: list[str] = []
        self.running = 0
        self.most_running = 0

    def record(self, name: str) -> None:
        with self.changed:
            self.names.append(name)
            self.changed.notify_all()

    def count(self, name: str) -> int:
        with self.changed:
            return self.names.count(name)

    def wait_for(self, name: str, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.names.count(name) >= count, WAIT), (
                f"{name} ran {self.names.count(name)} time(s), not {count}"
            )


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def runners() -> Iterator[list[CronRunner]]:
    """Runners to stop after the test, whatever happened."""
    started: list[CronRunner] = []
    yield started
    for runner in started:
        runner.stop(WAIT)


def cron_threads() -> list[threading.Thread]:
    return [thread for thread in threading.enumerate() if thread.name.startswith("devserve.cron")]


def test_jobs_run_again_and_again_until_stopped(
    calls: Calls, runners: list[CronRunner], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "devserve.cron")
    runner = CronRunner([Job(lambda: calls.record("tick"), 0.05, "tick")], threads=2)
    runners.append(runner)
    runner.start()
    assert "cron: 1 job on 1 thread" in caplog.messages
    assert [(t.name, t.daemon) for t in cron_threads()] == [("devserve.cron.0", True)]
    calls.wait_for("tick", 3)
    assert runner.stop(WAIT) is True
    assert cron_threads() == []
    count = calls.count("tick")
    runner.start()  # once stopped, it stays stopped
    assert cron_threads() == []
    assert calls.count("tick") == count


def test_a_job_never_runs_twice_at_once(calls: Calls, runners: list[CronRunner]) -> None:
    def slow() -> None:
        with calls.changed:
            calls.running += 1
            calls.most_running = max(calls.most_running, calls.running)
        time.sleep(0.15)  # overruns its interval many times over
        with calls.changed:
            calls.running -= 1
        calls.record("slow")

    jobs = [Job(slow, 0.01, "slow"), Job(lambda: calls.record("quick"), 0.01, "quick")]
    runner = CronRunner(jobs, threads=2)
    runners.append(runner)
    runner.start()
    assert len(cron_threads()) == 2
    calls.wait_for("slow", 3)
    calls.wait_for("quick", 10)  # the second thread was free all along
    assert calls.most_running == 1


def test_a_failing_job_is_logged_and_runs_again(
    calls: Calls, runners: list[CronRunner], caplog: pytest.LogCaptureFixture
) -> None:
    def fails() -> None:
        calls.record("fails")
        raise KeyError("no such thing")

    def exits() -> None:
        calls.record("exits")
        raise SystemExit(3)

    runner = CronRunner([Job(fails, 0.02, "fails"), Job(exits, 0.02, "exits")], threads=1)
    runners.append(runner)
    runner.start()
    calls.wait_for("fails", 3)
    calls.wait_for("exits", 3)  # SystemExit does not end the thread either
    runner.stop(WAIT)
    failures = [r for r in caplog.records if r.getMessage() == "cron job fails failed"]
    assert len(failures) >= 2
    assert failures[0].levelno == logging.ERROR and failures[0].exc_info is not None
    assert "KeyError: 'no such thing'" in caplog.text
    assert "cron job exits failed" in caplog.messages


def test_a_job_past_the_time_limit_logs_its_stack_once(
    runners: list[CronRunner], caplog: pytest.LogCaptureFixture
) -> None:
    warned, done = threading.Event(), threading.Event()

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno == logging.WARNING:
                warned.set()

    spy = Spy()
    logging.getLogger("devserve.cron").addHandler(spy)

    def waits_for_the_test() -> None:
        warned.wait(WAIT)
        done.wait(0.35)  # three times the limit more: no second warning for this run

    try:
        runner = CronRunner([Job(waits_for_the_test, 60, "held")], threads=1, time_limit=0.1)
        runners.append(runner)
        runner.start()
        assert warned.wait(WAIT)
        assert runner.stop(WAIT) is True
    finally:
        logging.getLogger("devserve.cron").removeHandler(spy)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    header, *stack = warnings[0].splitlines()
    assert re.fullmatch(
        r"cron job held has run for \d+\.\ds, past the cron time limit \(0\.1s\); it goes on:",
        header,
    )
    assert re.fullmatch(
        r"# devserve\.cron\.0 \(cron, ident \d+\): job held, running for .*s", stack[0]
    )
    assert "in waits_for_the_test" in "\n".join(stack)


def test_without_a_time_limit_there_is_no_watchdog(runners: list[CronRunner]) -> None:
    runner = CronRunner([job(60)], threads=1, time_limit=0)
    runners.append(runner)
    runner.start()
    assert [thread.name for thread in cron_threads()] == ["devserve.cron.0"]
    with_limit = CronRunner([job(60)], threads=1, time_limit=5)
    runners.append(with_limit)
    with_limit.start()
    assert "devserve.cron.watchdog" in [thread.name for thread in cron_threads()]


def test_stop_abandons_a_job_still_running_after_the_timeout(
    calls: Calls, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "devserve.cron")
    release = threading.Event()

    def stuck() -> None:
        calls.record("stuck")
        release.wait(WAIT)

    runner = CronRunner([Job(stuck, 60, "stuck")], threads=1)
    runner.start()
    calls.wait_for("stuck", 1)
    started = time.monotonic()
    try:
        assert runner.stop(0.2) is False
        assert 0.2 <= time.monotonic() - started < WAIT
        assert "cron: waiting up to 0.2s for 1 running job: stuck" in caplog.messages
        assert any(
            message.startswith("cron job stuck still running after ")
            and message.endswith("s: abandoned")
            for message in caplog.messages
        )
    finally:
        release.set()
    assert runner.stop(WAIT) is True  # once it ended


def test_no_thread_without_cron_threads_or_jobs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "devserve.cron")
    CronRunner([job(0.01), job(0.01)], threads=0).start()
    assert caplog.messages == ["cron: 2 jobs not run (no cron thread)"]
    CronRunner([], threads=2).start()
    assert cron_threads() == []
    assert len(caplog.messages) == 1


def test_stop_before_start_is_fine() -> None:
    runner = CronRunner([job(0.01)], threads=2)
    assert runner.stop(0) is True
    runner.start()
    assert cron_threads() == []


def test_a_stack_dump_says_what_a_cron_thread_does(calls: Calls) -> None:
    release = threading.Event()

    def busy() -> None:
        calls.record("busy")
        release.wait(WAIT)

    runner = CronRunner([Job(busy, 60, "busy"), job(60, "idle")], threads=2)
    runner.start()
    try:
        calls.wait_for("busy", 1)
        headers = [line for line in debug.format_stacks(cron_threads()) if line.startswith("#")]
        assert any(": job busy, running for " in line for line in headers), headers
        assert all(" (cron, ident " in line for line in headers), headers
        assert sum(line.endswith(": idle") for line in headers) == 1, headers
    finally:
        release.set()
        runner.stop(WAIT)
