from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests import browser as chromium
from tests.integration.harness import DevserveProcess, clean_env


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this folder (``pytest -m integration`` / ``-m "not integration"``);
    a ``pytestmark`` here would not apply: pytest reads it from test modules only."""
    folder = Path(__file__).parent
    for item in items:
        if folder in Path(item.path).parents:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    report = yield
    if report.when == "call":
        item.stash[_failed_key] = report.failed
    return report


_failed_key = pytest.StashKey[bool]()

StartDevserve = Callable[..., DevserveProcess]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    return clean_env(home)


@pytest.fixture(params=["warm", "exec"])
def reload_mode(request: pytest.FixtureRequest, env: dict[str, str]) -> str:
    """A test that uses it runs with both ways of reloading: a fork of the warm parent, and
    a fresh image of the process (``DEVSERVE_RELOAD_MODE`` for every devserve it starts)."""
    env["DEVSERVE_RELOAD_MODE"] = request.param
    return str(request.param)


@pytest.fixture
def devserve(
    request: pytest.FixtureRequest, tmp_path: Path, env: dict[str, str]
) -> Iterator[StartDevserve]:
    """Start devserve processes; every one is killed (process group) after the test, and its
    log is printed when the test failed."""
    started: list[DevserveProcess] = []

    def start(
        *args: str,
        cwd: Path | None = None,
        env_extra: Mapping[str, str] | None = None,
        command: Sequence[str] | None = None,
        ready: bool = True,
    ) -> DevserveProcess:
        process = DevserveProcess(
            args,
            cwd=cwd or tmp_path,
            log_path=tmp_path / f"devserve-{len(started)}.log",
            env={**env, **(env_extra or {})},
            command=command,
        )
        started.append(process)
        return process.wait_ready() if ready else process

    yield start
    for process in started:
        process.stop()
    if request.node.stash.get(_failed_key, False):
        for process in started:
            print(f"\n--- log of devserve {' '.join(process.args)} (pid {process.pid}) ---")
            print(process.log)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium driven by Selenium, on a profile of its own."""
    assert chromium.installed(), chromium.MISSING
    driver = chromium.start_chromium(tmp_path / "chromium-profile")
    try:
        yield driver
    finally:
        driver.quit()
