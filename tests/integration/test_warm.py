"""Warm reload on the real CLI: the parent and its serving child, the fallbacks to a fresh
image, signals and processes, a Django project (with Django REST framework) reloading warm.

Every test of ``test_reload.py`` also runs in warm mode (its ``reload_mode`` fixture); these
are the behaviours only warm mode has."""

from __future__ import annotations

import http.client
import os
import re
import signal
import threading
from pathlib import Path

import psutil
import pytest

from tests import projects
from tests.integration.conftest import StartDevserve
from tests.integration.harness import (
    DevserveProcess,
    count_reloads,
    happens_within,
    wait_reloads,
    wait_until,
    wait_watching,
    write_file,
)
from tests.integration.test_reload import make_addons, set_version, version_of

pytestmark = pytest.mark.timeout(60)

LIBRARY_MODULE = """\
ANSWER = {answer!r}
"""

APP_USING_THE_LIBRARY = """\
import helper


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [helper.ANSWER.encode()]
"""


@pytest.fixture
def addons(tmp_path: Path) -> Path:
    return make_addons(tmp_path)


def start_warm(devserve: StartDevserve, addons: Path, *extra: str) -> DevserveProcess:
    server = devserve("-p", "0", "--dev", "reload", *extra, str(addons))
    wait_watching(server)
    return server


def serving_child(server: DevserveProcess) -> int:
    """The PID of the warm parent's serving child (waits until there is exactly one)."""
    children: list[psutil.Process] = []

    def one() -> bool:
        children[:] = psutil.Process(server.pid).children()
        return len(children) == 1

    wait_until(one, 10, "one serving child")
    return children[0].pid


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_reload_forks_a_new_child_of_the_same_parent(
    devserve: StartDevserve, addons: Path, tmp_path: Path
) -> None:
    pidfile = tmp_path / "devserve.pid"
    server = start_warm(devserve, addons, "--pidfile", str(pidfile))
    first = serving_child(server)
    assert version_of(server) == "v1"
    set_version(addons / "demo", "v2")
    wait_reloads(server, 1)
    assert re.search(r"reloaded in \d+ ms \(warm\): .*controllers\.py \(settle \d+ \+", server.log)
    assert version_of(server) == "v2"
    second = serving_child(server)
    assert second != first and happens_within(lambda: gone(first), 5)
    assert pidfile.read_text().strip() == str(server.pid)  # the PID the user knows
    # What ps shows.
    parent_title = " ".join(psutil.Process(server.pid).cmdline())
    child_title = " ".join(psutil.Process(second).cmdline())
    assert parent_title.startswith("devserve: warm parent"), parent_title
    assert child_title.startswith(f"devserve: serving [{second}]"), child_title


def test_hup_reloads_with_a_fresh_image_then_warm_again(
    devserve: StartDevserve, addons: Path
) -> None:
    server = start_warm(devserve, addons)
    server.signal(signal.SIGHUP)
    wait_reloads(server, 1)
    assert "reloading with a fresh process image: SIGHUP" in server.log
    assert re.search(r"reloaded in \d+ ms \(exec\): SIGHUP", server.log), server.log
    assert server.popen.poll() is None
    wait_watching(server, images=2)
    set_version(addons / "demo", "v2")
    wait_reloads(server, 2)
    assert re.search(r"reloaded in \d+ ms \(warm\): .*controllers\.py", server.log), server.log
    assert version_of(server) == "v2"


def test_a_change_to_a_module_the_parent_holds_needs_a_fresh_image(
    devserve: StartDevserve, tmp_path: Path
) -> None:
    # A library (under a site-packages folder: not the project's), watched by name.
    library = tmp_path / "lib" / "site-packages"
    library.mkdir(parents=True)
    (tmp_path / "project").mkdir()
    write_file(library / "helper.py", LIBRARY_MODULE.format(answer="one"))
    write_file(tmp_path / "project" / "webapp.py", APP_USING_THE_LIBRARY)
    server = devserve(
        "-p",
        "0",
        "--dev",
        "reload",
        "--reload-path",
        str(library / "helper.py"),
        "webapp:app",
        cwd=tmp_path / "project",
        env_extra={"PYTHONPATH": str(library)},
    )
    wait_watching(server)
    assert server.request("/").text == "one"
    server.wait_for_log(r"warm parent: \d+ modules imported ahead")
    write_file(library / "helper.py", LIBRARY_MODULE.format(answer="two"))
    wait_reloads(server, 1)
    assert "helper.py is loaded by the warm parent" in server.log, server.log
    assert re.search(r"reloaded in \d+ ms \(exec\)", server.log), server.log
    assert server.request("/").text == "two"


def test_a_change_to_the_config_file_needs_a_fresh_image(
    devserve: StartDevserve, addons: Path, tmp_path: Path
) -> None:
    config = tmp_path / "devserve.conf"
    config.write_text("[options]\nlog_level = info\n")
    server = start_warm(devserve, addons, "-c", str(config))
    config.write_text("[options]\nlog_level = info\nshutdown_grace = 3\n")
    wait_reloads(server, 1)
    assert "devserve.conf is loaded by the warm parent" in server.log, server.log
    assert re.search(r"reloaded in \d+ ms \(exec\): .*devserve\.conf", server.log), server.log


def test_a_killed_serving_child_is_replaced_within_a_second(
    devserve: StartDevserve, addons: Path
) -> None:
    server = start_warm(devserve, addons)
    child = serving_child(server)
    os.kill(child, signal.SIGKILL)
    assert happens_within(lambda: version_of(server) == "v1", 1.0), server.log
    assert re.search(
        rf"serving process \(pid {child}\) ended \(killed by signal SIGKILL\)", server.log
    )
    assert serving_child(server) != child


def test_the_child_stops_when_the_parent_is_killed(devserve: StartDevserve, addons: Path) -> None:
    server = start_warm(devserve, addons)
    child = serving_child(server)
    os.kill(server.pid, signal.SIGKILL)
    server.popen.wait(5)
    assert happens_within(lambda: gone(child), 1.0), "the serving child outlived its parent"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_int_and_term_stop_the_parent_and_its_child(
    devserve: StartDevserve, addons: Path, signum: int
) -> None:
    server = start_warm(devserve, addons)
    child = serving_child(server)
    server.signal(signum)
    assert server.wait_exit() == 0
    assert happens_within(lambda: gone(child), 1.0)
    assert "forced" not in server.log  # one signal is a graceful stop, in both processes


def test_ctrl_c_on_a_terminal_is_one_graceful_stop(devserve: StartDevserve, addons: Path) -> None:
    """CTRL-C signals the whole process group: the child ignores it and its parent stops
    it, so a request running finishes instead of being cut as by a second signal."""
    server = start_warm(devserve, addons)
    child = serving_child(server)
    os.killpg(server.pid, signal.SIGINT)
    assert server.wait_exit() == 0
    assert happens_within(lambda: gone(child), 1.0)
    assert "forced" not in server.log


def test_quit_and_usr1_reach_the_serving_child(devserve: StartDevserve, addons: Path) -> None:
    server = start_warm(devserve, addons)
    child = serving_child(server)
    server.signal(signal.SIGQUIT)
    server.wait_for_log(rf"stacks of process {child} ")
    server.wait_for_log(rf"stacks of process {server.pid} ")  # the parent's own too
    server.signal(signal.SIGUSR1)
    server.wait_for_log(r"cache")  # the child's cache report


def test_exec_mode_runs_no_child(devserve: StartDevserve, addons: Path) -> None:
    server = start_warm(devserve, addons, "--reload-mode", "exec")
    set_version(addons / "demo", "v2")
    wait_reloads(server, 1)
    assert re.search(r"reloaded in \d+ ms \(exec\)", server.log), server.log
    assert psutil.Process(server.pid).children() == []


def test_django_with_rest_framework_reloads_warm(devserve: StartDevserve, tmp_path: Path) -> None:
    site = projects.django_project(tmp_path / "site")
    server = devserve("-p", "0", "--dev", "reload", "mysite.wsgi:application", cwd=site)
    wait_watching(server)
    assert '"version":"v0"' in server.request("/api").text
    server.wait_for_log(r"warm parent: \d+ modules imported ahead")
    for number in (1, 2):
        projects.set_version(site / "shop" / "views.py", f"v{number}")
        wait_reloads(server, number)
        assert f'"version":"v{number}"' in server.request("/api").text
    assert len(re.findall(r"reloaded in \d+ ms \(warm\): shop/views\.py", server.log)) == 2


def test_each_edit_is_one_reload_however_fast_the_reload(
    devserve: StartDevserve, addons: Path
) -> None:
    """A warm reload is done within the watcher's allowance for coarse file times: the new
    child must not take the edit it was forked for as a change made while it started."""
    server = start_warm(devserve, addons)
    for number in range(2, 7):
        set_version(addons / "demo", f"v{number}")
        wait_until(lambda n=number: version_of(server) == f"v{n}", 10, f"v{number} served")
        wait_watching(server, images=number)  # the new child watches: it would report now
    assert not happens_within(lambda: count_reloads(server) > 5, 1.0), server.log
    assert count_reloads(server) == 5


def test_prefork_reloads_warm_and_loses_no_request(devserve: StartDevserve, addons: Path) -> None:
    """The master is a child of the warm parent: a reload forks a new master, which adopts
    the old workers (they serve on meanwhile) and retires them once its own are ready."""
    server = start_warm(devserve, addons, "--workers", "2")
    failures: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                response = server.request("/version", timeout=10)
            except (OSError, http.client.HTTPException) as error:
                failures.append(repr(error))
                continue
            if response.status != 200:
                failures.append(f"{response.status}: {response.text}")

    clients = [threading.Thread(target=hammer) for _ in range(3)]
    for client in clients:
        client.start()
    try:
        for number in (2, 3, 4):
            set_version(addons / "demo", f"v{number}")
            wait_until(lambda n=number: version_of(server) == f"v{n}", 10, f"v{number} served")
    finally:
        stop.set()
        for client in clients:
            client.join(15)
    assert failures == []
    assert len(re.findall(r"reloaded in \d+ ms \(warm\)", server.log)) == 3, server.log
    assert "retiring 2 worker(s) of the previous code" in server.log
    assert "fresh process image" not in server.log
    assert psutil.Process(server.pid).cmdline()[0] == "devserve: warm parent"


def test_pdb_on_the_terminal_runs_in_the_serving_child(env: dict[str, str]) -> None:
    """--dev reload,pdb: the post-mortem prompt comes from the serving child, on the same
    terminal, and takes what is typed there."""
    from tests.integration.harness import APPS
    from tests.integration.test_post_mortem import Terminal, get_in_background

    terminal = Terminal(["-p", "0", "--dev", "reload,pdb", "slowapp:broken_app"], APPS, env)
    try:
        port = int(terminal.read_until(r"serving on http://127\.0\.0\.1:(\d+)").group(1))
        client, statuses = get_in_background(port)
        terminal.read_until(r"\(Pdb\) ")
        terminal.type("p 'pid', __import__('os').getpid(), __import__('os').getppid()")
        pid, ppid = map(int, terminal.read_until(r"\('pid', (\d+), (\d+)\)").groups())
        assert ppid == terminal.popen.pid and pid != terminal.popen.pid
        terminal.type("c")
        client.join(15)
        assert statuses == [500]
    finally:
        terminal.close()


def test_a_killed_prefork_master_leaves_no_worker_behind(
    devserve: StartDevserve, addons: Path
) -> None:
    """Its workers become the warm parent's children; the parent stops them and forks a
    new master with new workers: two workers in all, never four serving for good."""
    server = start_warm(devserve, addons, "--workers", "2")
    master = serving_child(server)
    old = {p.pid for p in psutil.Process(master).children()}
    assert len(old) == 2
    os.kill(master, signal.SIGKILL)

    def title(process: psutil.Process) -> str:
        try:
            return " ".join(process.cmdline())
        except psutil.Error:  # ended meanwhile (a zombie not reaped yet)
            return ""

    def replaced() -> bool:
        everyone = psutil.Process(server.pid).children(recursive=True)
        workers = {p.pid for p in everyone if "worker" in title(p)}
        return len(workers) == 2 and not workers & old

    wait_until(replaced, 10, "two new workers and none of the old")
    assert all(gone(pid) for pid in old)
    assert version_of(server) == "v1"
