"""--dev reload on the real CLI: watching, the syntax check, broken code, phoenix re-exec."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import StartDevserve
from tests.integration.harness import (
    DevserveProcess,
    Response,
    count_reloads,
    wait_reloads,
    wait_until,
    wait_watching,
    without_live_tag,
    write_file,
)

# Every test here runs with both ways of reloading (conftest's reload_mode).
pytestmark = pytest.mark.usefixtures("reload_mode")

CONTROLLER = """\
import pathlib
import time

from devserve.http import Controller, route

VERSION = {version!r}
# Outside the watched addons folder: tells the test the slow request is inside the app.
STARTED = pathlib.Path(__file__).resolve().parents[2] / "slow-started"


class Demo(Controller):
    @route("/version")
    def version(self):
        return VERSION

    @route("/slow/<float:seconds>")
    def slow(self, seconds):
        STARTED.write_text("started")
        time.sleep(seconds)
        return "slow " + VERSION
"""


def make_addons(root: Path, version: str = "v1") -> Path:
    """An addons folder with one addon, ``demo``, whose /version answers ``version``."""
    addon = root / "addons" / "demo"
    addon.mkdir(parents=True)
    (addon / "__manifest__.py").write_text("{'name': 'Demo', 'version': '1.0'}\n")
    (addon / "__init__.py").write_text("from . import controllers\n")
    set_version(addon, version)
    return root / "addons"


def set_version(addon: Path, version: str, *, atomic: bool = False) -> None:
    write_file(addon / "controllers.py", CONTROLLER.format(version=version), atomic=atomic)


def version_of(server: DevserveProcess) -> str:
    return server.request("/version").text


@pytest.fixture
def addons(tmp_path: Path) -> Path:
    return make_addons(tmp_path)


def read_to_end(client: Any) -> bytes:
    """Everything the server sends until it closes the connection (without live reload's
    tag, which the HTML pages get)."""
    answer = b""
    while chunk := client.recv(4096):
        answer += chunk
    return without_live_tag(answer)


def start_reloading(devserve: StartDevserve, addons: Path, *extra: str) -> DevserveProcess:
    server = devserve("-p", "0", "--dev", "reload", *extra, str(addons))
    server.wait_for_log(r"watching .* with \w+")
    return server


@pytest.mark.parametrize("atomic", [False, True], ids=["in-place", "atomic-rename"])
def test_save_reloads_in_place_same_pid(
    devserve: StartDevserve, addons: Path, tmp_path: Path, atomic: bool
) -> None:
    pidfile = tmp_path / "devserve.pid"
    server = start_reloading(devserve, addons, "--pidfile", str(pidfile))
    assert version_of(server) == "v1"

    set_version(addons / "demo", "v2", atomic=atomic)
    wait_reloads(server, 1)
    assert version_of(server) == "v2"
    assert "controllers.py (settle " in server.log.split("reloaded in")[1].splitlines()[0]
    assert pidfile.read_text().strip() == str(server.pid)
    assert server.popen.poll() is None  # the same process, re-exec'd


def test_new_sub_folder_is_watched(devserve: StartDevserve, addons: Path) -> None:
    server = start_reloading(devserve, addons)
    package = addons / "demo" / "helpers"
    package.mkdir()
    (package / "__init__.py").write_text("")  # created before its folder's watch may exist
    wait_reloads(server, 1)
    (package / "tools.py").write_text("ANSWER = 42\n")
    wait_reloads(server, 2)


def test_ignored_and_excluded_paths_do_not_reload(devserve: StartDevserve, addons: Path) -> None:
    (addons / "demo" / "generated").mkdir()
    (addons / "demo" / ".git").mkdir()
    server = start_reloading(devserve, addons, "--reload-exclude", "generated")
    demo = addons / "demo"
    (demo / "generated" / "model.py").write_text("x = 1\n")  # excluded folder
    (demo / ".git" / "hook.py").write_text("x = 1\n")  # VCS folder
    (demo / "notes.txt").write_text("not python\n")  # not included
    (demo / ".controllers.py.swp").write_text("swap\n")  # editor swap file
    (demo / "data.db-journal").write_text("journal\n")  # SQLite journal
    # A real change afterwards: the only reload must name it alone.
    set_version(demo, "v2")
    wait_reloads(server, 1)
    cause = server.log.split("reloaded in")[1].splitlines()[0].split(" (settle")[0]
    assert cause.endswith("controllers.py"), cause
    assert version_of(server) == "v2"


def test_a_burst_of_changes_is_one_reload(devserve: StartDevserve, addons: Path) -> None:
    server = start_reloading(devserve, addons)
    for number in range(100):  # like a git checkout
        (addons / "demo" / f"module_{number}.py").write_text(f"N = {number}\n")
    set_version(addons / "demo", "v2")
    wait_reloads(server, 1)
    assert "and 98 more" in server.log
    assert version_of(server) == "v2"
    # Nothing else is pending: the next change is reload number two, not three.
    set_version(addons / "demo", "v3")
    wait_reloads(server, 2)


def test_syntax_error_keeps_the_old_code_serving(devserve: StartDevserve, addons: Path) -> None:
    server = start_reloading(devserve, addons)
    controller = addons / "demo" / "controllers.py"
    write_file(controller, controller.read_text().replace("VERSION = 'v1'", "VERSION = 'v1"))
    server.wait_for_log(r"not reloading, syntax error in .*controllers\.py, line 6")
    server.wait_for_log(r"VERSION = 'v1")  # the offending line is shown
    assert version_of(server) == "v1"
    assert count_reloads(server) == 0

    set_version(addons / "demo", "v2")
    wait_reloads(server, 1)
    assert version_of(server) == "v2"


def test_import_error_serves_500_then_recovers(devserve: StartDevserve, addons: Path) -> None:
    server = start_reloading(devserve, addons)
    controller = addons / "demo" / "controllers.py"
    write_file(controller, controller.read_text() + "\nundefined_name.attribute\n")
    wait_reloads(server, 1)

    plain = server.request("/version")
    assert plain.status == 500
    assert "NameError" in plain.text and "undefined_name" in plain.text
    assert plain.headers["Content-Type"].startswith("text/plain")
    page = server.request("/anything", headers={"Accept": "text/html,*/*"})
    assert page.status == 500 and page.headers["Content-Type"].startswith("text/html")
    assert "The app failed to load" in page.text and "controllers.py" in page.text

    set_version(addons / "demo", "v2")
    wait_reloads(server, 2)
    assert version_of(server) == "v2"


def test_broken_at_first_start_then_fixed(devserve: StartDevserve, addons: Path) -> None:
    (addons / "demo" / "__init__.py").write_text("from . import controllers\nimport nope\n")
    server = start_reloading(devserve, addons)
    assert server.request("/version").status == 500
    assert "No module named 'nope'" in server.request("/version").text
    (addons / "demo" / "__init__.py").write_text("from . import controllers\n")
    wait_reloads(server, 1)
    assert version_of(server) == "v1"


def test_broken_code_without_reload_is_a_one_line_error(
    devserve: StartDevserve, addons: Path
) -> None:
    (addons / "demo" / "__init__.py").write_text("import nope\n")
    server = devserve("-p", "0", str(addons), ready=False)
    assert server.wait_exit() == 4
    assert "addon 'demo' failed to import" in server.log
    assert "Traceback" not in server.log


def wait_slow_started(root: Path) -> None:
    wait_until(lambda: (root / "slow-started").exists(), 10, "the slow request to be running")


def test_in_flight_request_completes_across_a_reload(
    devserve: StartDevserve, addons: Path, tmp_path: Path
) -> None:
    server = start_reloading(devserve, addons)
    responses: list[Response] = []
    thread = threading.Thread(target=lambda: responses.append(server.request("/slow/2.0")))
    thread.start()
    wait_slow_started(tmp_path)
    set_version(addons / "demo", "v2")
    thread.join(15)
    assert responses and responses[0].status == 200 and responses[0].text == "slow v1"
    wait_reloads(server, 1)
    assert version_of(server) == "v2"


def test_reload_grace_bounds_a_long_request(
    devserve: StartDevserve, addons: Path, tmp_path: Path
) -> None:
    server = start_reloading(devserve, addons, "--reload-grace", "0.5")
    errors: list[BaseException] = []

    def slow() -> None:
        try:
            server.request("/slow/30.0", timeout=40)
        except OSError as error:
            errors.append(error)

    thread = threading.Thread(target=slow)
    thread.start()
    wait_slow_started(tmp_path)
    started = time.monotonic()
    set_version(addons / "demo", "v2")
    wait_reloads(server, 1, timeout=10)
    assert time.monotonic() - started < 5
    assert version_of(server) == "v2"
    assert "cut short" in server.log
    thread.join(40)
    assert errors  # the request was cut short, not left hanging


def test_no_connection_refused_under_load_during_reloads(
    devserve: StartDevserve, addons: Path
) -> None:
    server = start_reloading(devserve, addons)
    stop = threading.Event()
    failures: list[str] = []
    answered = [0]

    def hammer() -> None:
        while not stop.is_set():
            try:
                response = server.request("/version", timeout=10)
                if response.status != 200:
                    failures.append(f"status {response.status}")
                answered[0] += 1
            except OSError as error:
                failures.append(repr(error))

    clients = [threading.Thread(target=hammer) for _ in range(4)]
    for client in clients:
        client.start()
    try:
        for number in range(2, 7):
            set_version(addons / "demo", f"v{number}")
            wait_reloads(server, number - 1)
            wait_until(lambda n=number: version_of(server) == f"v{n}", 10, "the new version")
    finally:
        stop.set()
        for client in clients:
            client.join(15)
    assert failures == []
    assert answered[0] > 20


def test_hup_reloads_in_place(devserve: StartDevserve, addons: Path) -> None:
    server = devserve("-p", "0", str(addons))  # no --dev reload: HUP still restarts
    server.signal(signal.SIGHUP)
    wait_reloads(server, 1)
    assert "reloaded in" in server.log and "SIGHUP" in server.log
    assert version_of(server) == "v1"


def test_hup_storm_is_survived(devserve: StartDevserve, addons: Path) -> None:
    server = start_reloading(devserve, addons)
    for _ in range(50):
        server.signal(signal.SIGHUP)
    wait_until(lambda: count_reloads(server) >= 1, 15, "the first reload")
    # A known last change: once its reload shows, the storm has been folded away.
    set_version(addons / "demo", "v2")
    wait_until(lambda: version_of(server) == "v2", 15, "the edit's reload")
    assert server.popen.poll() is None
    # The storm is one reload, plus at most one for the HUPs sent during it; then the edit.
    assert 2 <= count_reloads(server) <= 3, server.log


def test_polling_backend(devserve: StartDevserve, addons: Path) -> None:
    server = start_reloading(devserve, addons, "--reload-backend", "poll")
    assert "with poll" in server.log
    set_version(addons / "demo", "v2")
    wait_reloads(server, 1)
    assert version_of(server) == "v2"


def test_out_of_inotify_watches_falls_back_to_polling(
    devserve: StartDevserve, addons: Path, tmp_path: Path
) -> None:
    for name in ("a", "b", "c"):
        (addons / "demo" / name).mkdir()
    # Injected at interpreter start (and again after each exec): the third watch fails.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(ENOSPC_INJECTION)
    server = devserve(
        "-p",
        "0",
        "--dev",
        "reload",
        "--reload-backend",
        "inotify",
        str(addons),
        env_extra={"PYTHONPATH": str(site), "FAKE_MAX_USER_WATCHES": "2"},
    )
    server.wait_for_log("inotify ran out of watches at .*: that folder is polled instead")
    server.wait_for_log(r"fs\.inotify\.max_user_watches")
    server.wait_for_log(r"with inotify \+ poll")
    (addons / "demo" / "c" / "late.py").write_text("X = 1\n")  # in a polled folder
    wait_reloads(server, 1)


ENOSPC_INJECTION = """\
import ctypes, errno, os
import inotify.calls as calls

_limit = int(os.environ["FAKE_MAX_USER_WATCHES"])
_real_add_watch = calls.inotify_add_watch
_added = [0]


def _add_watch(fd, path, mask):
    _added[0] += 1
    if _added[0] > _limit:
        ctypes.set_errno(errno.ENOSPC)
        raise calls.InotifyError("injected: out of watches")
    return _real_add_watch(fd, path, mask)


calls.inotify_add_watch = _add_watch
"""


def test_wsgi_app_package_is_watched(devserve: StartDevserve, tmp_path: Path) -> None:
    package = tmp_path / "site_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "wsgi.py").write_text(WSGI.format(text="one"))
    server = devserve("-p", "0", "--dev", "reload", "site_pkg.wsgi:app", cwd=tmp_path)
    server.wait_for_log("watching site_pkg with")
    assert server.request("/").text == "one"
    write_file(package / "wsgi.py", WSGI.format(text="two"), atomic=True)
    wait_reloads(server, 1)
    assert server.request("/").text == "two"


WSGI = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"{text}"]
"""


def test_reload_path_is_watched(devserve: StartDevserve, addons: Path, tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    server = start_reloading(
        devserve, addons, "--reload-path", str(templates), "--reload-include", "*.py,*.html"
    )
    (templates / "page.html").write_text("<p>hi</p>\n")
    wait_reloads(server, 1)


@pytest.mark.parametrize(
    "options",
    [None, [], ["-X", "dev"], ["-W", "error"], ["-u"]],
    ids=["script", "module", "module-X-dev", "module-W-error", "module-u"],
)
def test_each_launch_form_comes_back_the_same(
    devserve: StartDevserve, addons: Path, options: list[str] | None
) -> None:
    """``devserve``, ``python -m devserve`` and interpreter options, as IDEs start it."""
    command = None if options is None else [sys.executable, *options, "-m", "devserve"]
    server = devserve("-p", "0", "--dev", "reload", str(addons), command=command)
    server.wait_for_log("watching")
    before = Path(f"/proc/{server.pid}/cmdline").read_bytes()
    set_version(addons / "demo", "v2")
    wait_reloads(server, 1)
    assert Path(f"/proc/{server.pid}/cmdline").read_bytes() == before
    assert version_of(server) == "v2"


def test_systemd_socket_activation(devserve: StartDevserve, addons: Path) -> None:
    import shutil
    import socket

    activate = shutil.which("systemd-socket-activate")
    assert activate, "systemd-socket-activate (Debian package systemd) is needed"
    with socket.socket() as probe:  # a port for the activator to bind
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from tests.integration.harness import devserve_command

    server = devserve(
        "--dev",
        "reload",
        str(addons),
        command=[activate, "-l", f"127.0.0.1:{port}", *devserve_command()],
        ready=False,
    )
    server.wait_for_log(f"Listening on 127.0.0.1:{port}")
    # The activator starts devserve on the first connection, which waits in the backlog.
    server.host, server.port = "127.0.0.1", port
    assert version_of(server) == "v1"
    server.wait_ready()
    assert server.port == port
    set_version(addons / "demo", "v2")
    wait_reloads(server, 1)
    assert version_of(server) == "v2"


def test_stray_descriptors_are_not_inherited(
    devserve: StartDevserve, addons: Path, reload_mode: str
) -> None:
    server = start_reloading(devserve, addons)
    set_version(addons / "demo", "v2")
    wait_reloads(server, 1)
    server.wait_for_log(r"watching .* with inotify \(ready", after=server.log.index("reloaded"))
    # One inotify instance after a reload: the old image's watches were released. Warm:
    # the serving child watches, and the parent holds none.
    serving = server.pid
    if reload_mode == "warm":
        assert _inotify_descriptors(server.pid) == []
        (serving,) = _children(server.pid)
    inotify = _inotify_descriptors(serving)
    assert len(inotify) == 1, inotify


def _inotify_descriptors(pid: int) -> list[str]:
    return [fd for fd in os.listdir(f"/proc/{pid}/fd") if "inotify" in _readlink(pid, fd)]


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as file:
        return [int(child) for child in file.read().split()]


def _readlink(pid: int, fd: str) -> str:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError:
        return ""


def test_same_size_edit_in_the_same_second_is_not_stale(
    devserve: StartDevserve, addons: Path
) -> None:
    """Python trusts a .pyc whose recorded source mtime and size match: devserve must not
    let the new image run the previous bytecode."""
    server = start_reloading(devserve, addons)
    controller = addons / "demo" / "controllers.py"
    set_version(addons / "demo", "v2")
    wait_reloads(server, 1)
    assert version_of(server) == "v2"  # v2 is now compiled and cached
    wait_watching(server, images=2)  # the mtime trick below hides the edit from a catch-up
    cached = os.stat(controller)
    set_version(addons / "demo", "v3")  # same size...
    os.utime(controller, ns=(cached.st_atime_ns, cached.st_mtime_ns))  # ...and same mtime
    wait_reloads(server, 2)
    assert version_of(server) == "v3"


def test_watchdog_backend(devserve: StartDevserve, addons: Path) -> None:
    server = start_reloading(devserve, addons, "--reload-backend", "watchdog")
    assert "with watchdog" in server.log
    set_version(addons / "demo", "v2", atomic=True)
    wait_reloads(server, 1)
    assert version_of(server) == "v2"


def test_symlinked_addon_is_followed(devserve: StartDevserve, tmp_path: Path) -> None:
    elsewhere = make_addons(tmp_path / "elsewhere")
    served = tmp_path / "served"
    served.mkdir()
    (served / "demo").symlink_to(elsewhere / "demo", target_is_directory=True)
    server = start_reloading(devserve, served)
    assert version_of(server) == "v1"
    set_version(elsewhere / "demo", "v2")  # edited through its real path
    wait_reloads(server, 1)
    assert version_of(server) == "v2"


def test_broken_file_outside_the_watched_folders_is_watched(
    devserve: StartDevserve, tmp_path: Path
) -> None:
    package = tmp_path / "site_pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "wsgi.py").write_text("import helper\n\n" + WSGI.format(text="ok"))
    helper = tmp_path / "helper.py"  # beside the package, so outside the watched folder
    helper.write_text("raise RuntimeError('helper is broken')\n")
    server = devserve("-p", "0", "--dev", "reload", "site_pkg.wsgi:app", cwd=tmp_path)
    server.wait_for_log("watching site_pkg")
    assert "helper is broken" in server.request("/").text
    write_file(helper, "VALUE = 1\n")
    wait_reloads(server, 1)
    assert server.request("/").text == "ok"


def test_connection_accepted_before_a_reload_is_served_after_it(
    devserve: StartDevserve, addons: Path
) -> None:
    """A client slow to send its request across a reload: the connection is handed to the
    new image, which answers it."""
    import socket

    server = start_reloading(devserve, addons)
    clients = [socket.create_connection((server.host, server.port), timeout=10) for _ in range(3)]
    try:
        assert version_of(server) == "v1"  # the three are accepted by now, sending nothing
        set_version(addons / "demo", "v2")
        wait_reloads(server, 1)
        for client in clients:
            client.sendall(b"GET /version HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        for client in clients:
            answer = read_to_end(client)
            assert answer.startswith(b"HTTP/1.1 200"), answer
            assert answer.endswith(b"v2"), answer
    finally:
        for client in clients:
            client.close()


def test_request_head_split_across_a_reload_is_served_after_it(
    devserve: StartDevserve, addons: Path
) -> None:
    """A client halfway through its request head when the reload happens: what the old
    image read of it goes to the new image with the connection, which answers it."""
    import socket

    server = start_reloading(devserve, addons)
    client = socket.create_connection((server.host, server.port), timeout=10)
    try:
        client.sendall(b"GET /version HTTP/1.1\r\nHo")
        # Another request, answered once the loop went round: it has read those bytes.
        assert version_of(server) == "v1"
        set_version(addons / "demo", "v2")
        wait_reloads(server, 1)
        client.sendall(b"st: test\r\nConnection: close\r\n\r\n")
        answer = read_to_end(client)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"v2"), answer
    finally:
        client.close()


def test_pipelined_head_begun_during_a_reload_drain_is_served_after_it(
    devserve: StartDevserve, addons: Path, tmp_path: Path
) -> None:
    """A request running when the reload is decided, with the start of the next one
    pipelined behind it: the connection and those bytes go to the new image."""
    import socket

    server = start_reloading(devserve, addons)
    client = socket.create_connection((server.host, server.port), timeout=10)
    try:
        client.sendall(b"GET /slow/1.5 HTTP/1.1\r\nHost: t\r\n\r\nGET /version HTTP/1.1\r\nHo")
        wait_until((tmp_path / "slow-started").exists, 10, "the slow request to run")
        set_version(addons / "demo", "v2")
        wait_reloads(server, 1)
        client.sendall(b"st: t\r\nConnection: close\r\n\r\n")
        answer = read_to_end(client)
        assert answer.count(b"HTTP/1.1 200 OK") == 2, answer
        assert b"slow v1" in answer and answer.endswith(b"v2"), answer
    finally:
        client.close()


def test_kept_alive_connection_survives_reloads(devserve: StartDevserve, addons: Path) -> None:
    """A browser's kept-alive connection is handed to each new image: the same connection
    gets the new code, with no reconnect."""
    import http.client

    server = start_reloading(devserve, addons)
    connection = http.client.HTTPConnection(server.host, server.port, timeout=10)

    def get_version() -> str:
        connection.request("GET", "/version")
        return without_live_tag(connection.getresponse().read()).decode()

    try:
        assert get_version() == "v1"
        local = connection.sock.getsockname()
        for number, version in enumerate(["v2", "v3"], start=1):
            set_version(addons / "demo", version)
            wait_reloads(server, number)
            assert get_version() == version
            assert connection.sock.getsockname() == local  # the same connection
    finally:
        connection.close()


def test_git_checkout_of_many_files_is_one_reload(
    devserve: StartDevserve, addons: Path, tmp_path: Path
) -> None:
    import shutil
    import subprocess

    git = shutil.which("git")
    assert git, "git is needed"
    demo = addons / "demo"
    models = demo / "models"
    models.mkdir()
    for number in range(300):
        (models / f"model_{number}.py").write_text(f"N = {number}\n")

    def run(*args: str) -> None:
        subprocess.run(
            [git, "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=addons,
            check=True,
            capture_output=True,
            timeout=60,
        )

    run("init", "-q", "-b", "one")
    run("add", "-A")
    run("commit", "-q", "-m", "one")
    run("checkout", "-q", "-b", "two")
    for number in range(300):
        (models / f"model_{number}.py").write_text(f"N = {number} * 2\n")
    set_version(demo, "v2")
    run("commit", "-q", "-am", "two")
    run("checkout", "-q", "one")

    server = start_reloading(devserve, addons)
    assert version_of(server) == "v1"
    run("checkout", "-q", "two")  # rewrites 301 files
    wait_until(lambda: version_of(server) == "v2", 15, "the checkout to be served")
    wait_watching(server, images=2)
    assert count_reloads(server) == 1, server.log
    assert "and 298 more" in server.log


RUN_SCRIPT = """\
import devserve

VERSION = {version!r}


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [VERSION.encode()]


if __name__ == "__main__":
    raise SystemExit(devserve.run(app, dev="reload", http_port=0))
"""


def test_script_calling_run_comes_back_after_a_reload(
    devserve: StartDevserve, tmp_path: Path
) -> None:
    script = tmp_path / "serve_me.py"
    script.write_text(RUN_SCRIPT.format(version="v1"))
    server = devserve(command=[sys.executable, "-u", str(script)], cwd=tmp_path)
    server.wait_for_log("watching")
    assert server.request("/").text == "v1"
    assert "serving: __main__:app" in server.log
    before = Path(f"/proc/{server.pid}/cmdline").read_bytes()
    write_file(script, RUN_SCRIPT.format(version="v2"), atomic=True)
    wait_reloads(server, 1)
    assert server.request("/").text == "v2"
    assert server.popen.poll() is None  # same process
    assert Path(f"/proc/{server.pid}/cmdline").read_bytes() == before


def test_run_rejects_an_unknown_setting(tmp_path: Path, env: dict[str, str]) -> None:
    import subprocess

    script = tmp_path / "typo.py"
    script.write_text("import devserve\ndevserve.run('x:y', htp_port=0)\n")
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "unknown setting 'htp_port'" in result.stderr
    assert "http_port" in result.stderr  # the known names are listed


def test_save_is_not_repeated_by_reloads(
    devserve: StartDevserve, addons: Path, tmp_path: Path
) -> None:
    config = tmp_path / "saved.conf"
    server = devserve("-c", str(config), "--save", "-p", "0", "--dev", "reload", str(addons))
    server.wait_for_log("watching")
    edited = config.read_text() + "# edited by hand after the first start\n"
    config.write_text(edited)
    set_version(addons / "demo", "v2")
    wait_reloads(server, 1)
    assert config.read_text() == edited
    assert server.log.count("settings saved to") == 1


SLOW_IMPORT_WSGI = """\
import pathlib, time

pathlib.Path({marker!r}).write_text("importing")
time.sleep(2)  # a slow import: the window to stop in


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"{text}"]
"""


def test_stop_while_the_new_image_imports_is_clean(devserve: StartDevserve, tmp_path: Path) -> None:
    package = tmp_path / "slowpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    marker = tmp_path / "importing"
    module = package / "wsgi.py"
    module.write_text(SLOW_IMPORT_WSGI.format(marker=str(marker), text="one"))
    pidfile = tmp_path / "devserve.pid"
    server = devserve(
        "-p", "0", "--dev", "reload", "--pidfile", str(pidfile), "slowpkg.wsgi:app", cwd=tmp_path
    )
    server.wait_for_log("watching")
    marker.unlink()
    write_file(module, SLOW_IMPORT_WSGI.format(marker=str(marker), text="two"))
    wait_until(marker.exists, 15, "the new image to be importing the app")
    server.signal(signal.SIGTERM)
    assert server.wait_exit(timeout=15) == 0
    assert not pidfile.exists()


# --- the addons folder goes away ---


@pytest.mark.parametrize("given", ["positional", "--addons-path"])
def test_addons_folder_removed_then_put_back(
    devserve: StartDevserve, addons: Path, tmp_path: Path, given: str
) -> None:
    """rm -rf addons, then the folder back (a checkout, a copy): the reloaded image serves
    the error page meanwhile and watches for the folder, whatever its command line says."""
    target = ["--addons-path", "addons"] if given == "--addons-path" else ["addons"]
    server = devserve("-p", "0", "--dev", "reload", *target, cwd=tmp_path)
    wait_watching(server)
    assert version_of(server) == "v1"
    saved = tmp_path / "saved"
    shutil.copytree(addons, saved)
    shutil.rmtree(addons)
    wait_reloads(server, 1)
    page = server.request("/version")
    assert page.status == 500 and "cannot read addons path" in page.text
    wait_watching(server, images=2)
    shutil.copytree(saved, addons)
    wait_until(lambda: version_of(server) == "v1", 15, "the addons to be served again")
    assert server.popen.poll() is None
    assert (
        "unknown command" not in server.log
        and "Traceback" not in server.log.split("serving the error")[0]
    )


def test_addons_folder_removed_before_the_watches_are_set(
    devserve: StartDevserve, addons: Path, tmp_path: Path
) -> None:
    server = devserve("-p", "0", "--dev", "reload", "addons", cwd=tmp_path)
    saved = tmp_path / "saved"
    shutil.copytree(addons, saved)
    shutil.rmtree(addons)  # likely before the watcher is set up (250 ms after serving)
    wait_watching(server)
    assert "watching nothing" not in server.log  # "for addons to come back", or "addons"
    shutil.copytree(saved, addons)
    set_version(addons / "demo", "v2")
    wait_until(lambda: version_of(server) == "v2", 15, "the new code to be served")


def test_a_missing_addons_folder_at_first_start_is_one_line(
    tmp_path: Path, env: dict[str, str]
) -> None:
    from tests.integration.harness import assert_one_line_error, run_cli

    cases = [(["gone"], 3), (["--dev", "reload", "gone"], 3), (["--addons-path", "gone"], 2)]
    for args, code in cases:  # a bad option value is a usage error (2)
        result = run_cli(["-p", "0", *args], cwd=tmp_path, env=env)
        assert_one_line_error(result, code, "'gone' does not exist")
