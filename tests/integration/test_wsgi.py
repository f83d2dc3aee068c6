"""Production: real gunicorn serves ``devserve.wsgi:application`` on loopback, with the
settings from the environment or the config file."""

from __future__ import annotations

from pathlib import Path

from devserve.errors import ExitCode
from tests.integration.conftest import StartDevserve
from tests.integration.harness import (
    EXAMPLE_ADDONS,
    DevserveProcess,
    console_script,
    write_addon,
)

LISTENING = r"Listening at: http://(127\.0\.0\.1):(\d+)"


def start_gunicorn(
    devserve: StartDevserve,
    env_extra: dict[str, str] | None = None,
    ready: bool = True,
    workers: int = 2,
) -> DevserveProcess:
    """gunicorn in its own process group (killed after the test by the fixture), bound to a
    port the kernel picks; its log says which."""
    process = devserve(
        "--bind",
        "127.0.0.1:0",
        "--workers",
        str(workers),
        "devserve.wsgi:application",
        command=console_script("gunicorn"),
        env_extra=env_extra,
        ready=False,
    )
    if ready:
        match = process.wait_for_log(LISTENING, timeout=30)
        process.host, process.port = match.group(1), int(match.group(2))
    return process


def assert_serves_the_example(server: DevserveProcess) -> None:
    page = server.request("/")
    assert page.status == 200
    assert "<h1>Hello from devserve</h1>" in page.text
    assert server.request("/hello/repeat/2").text == "hello\nhello\n"
    css = server.request("/hello/static/hello.css")
    assert css.status == 200
    assert css.headers["Content-Type"].startswith("text/css")
    assert css.body == (EXAMPLE_ADDONS / "hello" / "static" / "hello.css").read_bytes()


def test_gunicorn_serves_the_addons_path_of_the_environment(devserve: StartDevserve) -> None:
    server = start_gunicorn(devserve, {"DEVSERVE_ADDONS_PATH": str(EXAMPLE_ADDONS)})
    assert_serves_the_example(server)
    assert server.request("/no/such/page").status == 404


def test_gunicorn_reads_the_config_file_and_shows_devserve_warnings(
    devserve: StartDevserve, tmp_path: Path
) -> None:
    # The example addon twice: the second copy is ignored, and devserve says so in
    # gunicorn's output (logging is gunicorn's; devserve's own logger still shows).
    twin = write_addon(tmp_path / "twin", "hello", init="raise RuntimeError('imported')\n")
    config = tmp_path / "production.conf"
    config.write_text(f"[options]\naddons_path = {EXAMPLE_ADDONS},{twin.parent}\n")
    server = start_gunicorn(devserve, {"DEVSERVE_CONFIG": str(config)})
    assert_serves_the_example(server)
    server.wait_for_log(f"WARNING devserve.addons: addon 'hello' in {twin} is ignored")


# One worker in the failing cases: when several fail at once, gunicorn 27 raises its own
# HaltServer a second time while stopping, with a traceback of its own.


def test_gunicorn_with_nothing_to_serve_stops_with_one_line(devserve: StartDevserve) -> None:
    process = start_gunicorn(devserve, ready=False, workers=1)
    assert process.wait_exit(timeout=30) == ExitCode.CONFIG  # gunicorn: worker failed to boot
    log = process.log
    assert log.count("devserve: error: nothing to serve") == 1
    assert "Traceback" not in log


def test_gunicorn_with_an_addon_that_fails_to_import(
    devserve: StartDevserve, tmp_path: Path
) -> None:
    broken = write_addon(tmp_path / "addons", "broken", init="\n1 / 0\n")
    process = start_gunicorn(
        devserve, {"DEVSERVE_ADDONS_PATH": str(tmp_path / "addons")}, ready=False, workers=1
    )
    assert process.wait_exit(timeout=30) == ExitCode.APP_LOAD  # gunicorn: app failed to load
    log = process.log
    assert "devserve: error: addon 'broken' failed to import: ZeroDivisionError" in log
    assert f"{broken / '__init__.py'}, line 2" in log
    assert "Traceback" not in log
