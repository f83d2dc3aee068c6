from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devserve import reloader
from devserve.reloader import Reload

# --- describe_paths ---


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    return project


def test_describe_paths_relative_to_cwd_and_sorted(cwd: Path) -> None:
    paths = [str(cwd / "shop" / "views.py"), str(cwd / "app.py"), "/elsewhere/lib.py"]
    assert reloader.describe_paths(paths) == "/elsewhere/lib.py, app.py, shop/views.py"


def test_describe_paths_beyond_the_limit(cwd: Path) -> None:
    paths = [str(cwd / f"m{i}.py") for i in (4, 2, 5, 1, 3)]
    assert reloader.describe_paths(paths) == "m1.py, m2.py, m3.py and 2 more"
    assert reloader.describe_paths(paths, limit=1) == "m1.py and 4 more"
    assert reloader.describe_paths(paths, limit=5) == "m1.py, m2.py, m3.py, m4.py, m5.py"


def test_describe_paths_keeps_a_sibling_with_the_same_prefix_absolute(cwd: Path) -> None:
    sibling = f"{cwd}-old/app.py"  # starts with the cwd string but lies outside it
    assert reloader.describe_paths([sibling]) == sibling


def test_describe_paths_empty() -> None:
    assert reloader.describe_paths([]) == ""


# --- check_syntax ---


def test_check_syntax_valid_file(cwd: Path) -> None:
    valid = cwd / "valid.py"
    valid.write_text("def f(x):\n    return x + 1\n", encoding="utf-8")
    assert reloader.check_syntax([str(valid)]) == []


def test_check_syntax_error_names_file_line_message_and_source(cwd: Path) -> None:
    broken = cwd / "shop" / "models.py"
    broken.parent.mkdir()
    broken.write_text("def total(lines):\n    if lines\n        return 0\n", encoding="utf-8")
    [problem] = reloader.check_syntax([str(broken)])
    assert str(problem) == "shop/models.py, line 2: expected ':'\n    if lines"
    assert (problem.path, problem.line, problem.message, problem.source) == (
        str(broken),
        2,
        "expected ':'",
        "if lines",
    )


def test_check_syntax_of_a_folder_put_back_compiles_every_file_in_it(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder that came back whole (a checkout, a copy): its files are all new, and the
    bytecode that came with them may be stale; each is compiled (hash-checked) again."""
    import importlib.util

    monkeypatch.setattr(sys, "dont_write_bytecode", False)
    addon = cwd / "addons" / "shop"
    (addon / "__pycache__").mkdir(parents=True)
    (addon / "__pycache__" / "ignored.py").write_text("not python(\n", encoding="utf-8")
    (addon / "views.py").write_text("VERSION = 'v2'\n", encoding="utf-8")
    (addon / "broken.py").write_text("def f(:\n", encoding="utf-8")
    problems = reloader.check_syntax([str(cwd / "addons")])
    assert [str(p).split(",")[0] for p in problems] == ["addons/shop/broken.py"]
    cached = Path(importlib.util.cache_from_source(str(addon / "views.py")))
    assert cached.read_bytes()[4:8] == b"\x03\x00\x00\x00"  # flags: checked hash


def test_check_syntax_one_message_per_broken_file_in_order(cwd: Path) -> None:
    (cwd / "b.py").write_text("x = (1,\n", encoding="utf-8")
    (cwd / "a.py").write_text("print 'hello'\n", encoding="utf-8")
    (cwd / "ok.py").write_text("x = 1\n", encoding="utf-8")
    problems = [
        str(p) for p in reloader.check_syntax([str(cwd / n) for n in ("b.py", "ok.py", "a.py")])
    ]
    assert len(problems) == 2
    assert problems[0].startswith("a.py, line 1: Missing parentheses in call to 'print'")
    assert problems[0].endswith("\n    print 'hello'")
    assert problems[1].startswith("b.py, line 1: ")
    assert "never closed" in problems[1]


def test_check_syntax_null_byte(cwd: Path) -> None:
    (cwd / "nul.py").write_bytes(b"x = 1\n\0\n")
    [problem] = map(str, reloader.check_syntax([str(cwd / "nul.py")]))
    assert problem.startswith("nul.py")
    assert "null bytes" in problem


def test_check_syntax_ignores_other_and_missing_files(cwd: Path) -> None:
    (cwd / "notes.txt").write_text("def (:\n", encoding="utf-8")
    (cwd / "page.html").write_text("<p>if x</p>\n", encoding="utf-8")
    paths = [str(cwd / "notes.txt"), str(cwd / "page.html"), str(cwd / "deleted.py")]
    assert reloader.check_syntax(paths) == []


# --- discard_bytecode ---


def caches(source: Path) -> list[Path]:
    return [
        Path(importlib.util.cache_from_source(str(source), optimization=level))
        for level in ("", 1, 2)
    ]


def test_discard_bytecode_removes_every_optimization_level(tmp_path: Path) -> None:
    changed = tmp_path / "changed.py"
    other = tmp_path / "other.py"
    for source in (changed, other):
        source.write_text("x = 1\n", encoding="utf-8")
        for cache in caches(source):
            cache.parent.mkdir(exist_ok=True)
            cache.write_bytes(b"stale bytecode")
    reloader.discard_bytecode([str(changed), str(tmp_path / "notes.txt")])
    assert [cache.exists() for cache in caches(changed)] == [False, False, False]
    assert [cache.exists() for cache in caches(other)] == [True, True, True]
    assert changed.read_text(encoding="utf-8") == "x = 1\n"


def test_discard_bytecode_without_cache(tmp_path: Path) -> None:
    source = tmp_path / "fresh.py"
    source.write_text("x = 1\n", encoding="utf-8")
    reloader.discard_bytecode([str(source), str(tmp_path / "deleted.py")])
    assert sorted(path.name for path in tmp_path.iterdir()) == ["fresh.py"]


# --- Reload timings ---


@pytest.mark.parametrize(
    ("times", "expected"),
    [
        ((100.0, 100.027, 100.030, 100.126), "settle 27 + drain 3 + restart 96"),
        ((5.0, 5.0204, 5.0204, 5.5), "settle 20 + drain 0 + restart 480"),
        ((1.0, 2.5, 3.0, 3.0006), "settle 1500 + drain 500 + restart 1"),
    ],
)
def test_reload_summary(times: tuple[float, float, float, float], expected: str) -> None:
    first_seen, decided, exec_at, ready = times
    reload = Reload("shop/models.py and 2 more", first_seen, decided, exec_at)
    assert reload.summary(ready) == f"shop/models.py and 2 more ({expected})"


# --- the hand-over: a listen socket (systemd's, or the previous image's) ---


@pytest.fixture
def listen_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.fixture
def fd3() -> Iterator[None]:
    """Whatever this process has on descriptor 3 (pytest's capture may use it) is put back
    afterwards, so a test can place a socket there."""
    fd = reloader.LISTEN_FD
    try:
        saved, inheritable = os.dup(fd), os.get_inheritable(fd)
    except OSError:
        saved, inheritable = None, False
    try:
        yield
    finally:
        if saved is None:
            with contextlib.suppress(OSError):
                os.close(fd)
        else:
            os.dup2(saved, fd, inheritable=inheritable)
            os.close(saved)


def test_adopt_socket_addressed_to_another_process(listen_env: pytest.MonkeyPatch) -> None:
    listen_env.setenv("LISTEN_FDS", "1")
    listen_env.setenv("LISTEN_PID", str(os.getpid() + 1))
    listen_env.setenv(reloader.HANDOVER_ENV, '{"connections": [[4, ""]]}')
    assert reloader.Handover.decode() == reloader.Handover()
    assert os.environ["LISTEN_FDS"] == "1"
    assert os.environ["LISTEN_PID"] == str(os.getpid() + 1)
    assert reloader.HANDOVER_ENV not in os.environ  # never passed on to a child


def test_adopt_socket_without_variables(listen_env: pytest.MonkeyPatch) -> None:
    assert reloader.Handover.decode() == reloader.Handover()


def test_adopt_socket_takes_fd_3(listen_env: pytest.MonkeyPatch, fd3: None) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        os.dup2(listener.fileno(), reloader.LISTEN_FD, inheritable=True)
        address = listener.getsockname()
    listen_env.setenv("LISTEN_FDS", "1")
    listen_env.setenv("LISTEN_PID", str(os.getpid()))
    listen_env.setenv("LISTEN_FDNAMES", "http")
    handover = reloader.Handover.decode()  # systemd's: a socket, nothing else
    adopted = handover.listener
    assert adopted is not None
    assert handover == reloader.Handover(listener=adopted)
    try:
        assert adopted.fileno() == reloader.LISTEN_FD
        assert adopted.getsockname() == address
        assert adopted.type == socket.SOCK_STREAM
        assert os.get_inheritable(reloader.LISTEN_FD) is False
        for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            assert name not in os.environ
        with socket.create_connection(address, timeout=5):  # it still listens
            adopted.settimeout(5)
            connection, _ = adopted.accept()
            connection.close()
    finally:
        adopted.detach()  # fd3 restores the descriptor; the socket object must not close it


def test_adopt_socket_refuses_several_sockets(
    listen_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    listen_env.setenv("LISTEN_FDS", "2")
    listen_env.setenv("LISTEN_PID", str(os.getpid()))
    with caplog.at_level(logging.WARNING, logger="devserve.reloader"):
        assert reloader.Handover.decode().listener is None
    [record] = [r for r in caplog.records if r.name == "devserve.reloader"]
    assert record.levelno == logging.WARNING
    assert "LISTEN_FDS=2" in record.getMessage()
    assert "LISTEN_FDS" not in os.environ
    assert "LISTEN_PID" not in os.environ


def _pyc_flags(source: Path) -> int:
    import importlib.util

    cached = Path(importlib.util.cache_from_source(str(source)))
    return int.from_bytes(cached.read_bytes()[4:8], "little")


def test_check_syntax_writes_hash_checked_bytecode(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.dont_write_bytecode", False)
    module = cwd / "fresh.py"
    module.write_text("VALUE = 1\n")
    assert reloader.check_syntax([str(module)]) == []
    assert _pyc_flags(module) == 0b11  # hash-based (bit 0), checked against the source (bit 1)


def test_check_syntax_discards_bytecode_it_may_not_write(
    cwd: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    module = cwd / "stale.py"
    module.write_text("VALUE = 1\n")
    cached = Path(importlib.util.cache_from_source(str(module)))
    cached.parent.mkdir(exist_ok=True)
    cached.write_bytes(b"stale")
    monkeypatch.setattr("sys.dont_write_bytecode", True)
    assert reloader.check_syntax([str(module)]) == []
    assert not cached.exists()


# --- the hand-over round trip: encoded in one image, decoded in the next ---


def test_the_handover_crosses_the_exec() -> None:
    """A real exec: the listen socket, a connection with what was read of it, a worker's
    heartbeat pipe with its bytes, the evented socket, live reload's channel with a
    stream waiting in it and the image id, the timings, folders and PIN count
    reach the next image of the same process, each on its slot, close-on-exec again, and
    nothing else stays open or in the environment."""
    image = Path(__file__).with_name("handover_image.py")
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    process = subprocess.Popen(
        [sys.executable, str(image)], stdout=subprocess.PIPE, env=env, start_new_session=True
    )
    try:
        assert process.stdout is not None
        first = json.loads(process.stdout.readline())
        with socket.create_connection(("127.0.0.1", first["port"]), timeout=10) as client:
            client.sendall(b"GET /cart HTTP/1.1\r\nHost: sh")
            found = json.loads(client.makefile("rb").readline())
        with socket.create_connection(("127.0.0.1", first["port"]), timeout=10) as again:
            assert again.makefile("rb").readline() == b"the next image accepts\n"
        assert process.wait(timeout=10) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
    assert found.pop("pid") == first["pid"]  # the same process, a new image
    assert found.pop("port") == first["port"]
    assert found.pop("descriptors") == [3, 4, 5, 6, 7, 8]
    open_now = found.pop("open")
    assert set(open_now) >= {0, 1, 2, 3, 4, 5, 6, 7, 8}
    assert len(open_now) <= 10  # and the listing's own descriptor: nothing leaked
    assert found == {
        "inheritable": [False] * 6,
        "received": "GET /cart HTTP/1.1\r\nHost: sh",
        "worker": [4242, 2],
        "heartbeat": "r.",
        "evented": [first["evented_port"], [4343, 4444]],
        "watched": ["/src/extra", "/src/more"],
        "debugger_failures": 7,
        "own_channel": ["/__devserve__/events", 1],  # what waited in it
        "image": "1a2b-c3d4e5f6",
        "reload": ["shop/models.py and 2 more", 1.5, 2.5, True],
        "left_in_environment": [],
    }


@pytest.mark.parametrize(
    "record",
    [
        "not json",
        "[]",
        '{"connections": []}',  # fields missing
        '{"connections": [[2, ""]], "workers": [], "watched": [], "debugger_failures": 0}',
        '{"connections": [], "workers": [[1, 2]], "watched": [], "debugger_failures": 0}',
        '{"connections": [[5, "%%%"]], "workers": [], "watched": [], "debugger_failures": 0}',
        '{"connections": [], "workers": [], "watched": [], "debugger_failures": "x"}',
        '{"connections": [], "workers": [], "watched": [], "debugger_failures": 0,'
        ' "reload": ["a.py", "soon", 1, 2]}',
    ],
)
def test_a_malformed_handover_is_ignored(
    listen_env: pytest.MonkeyPatch, fd3: None, caplog: pytest.LogCaptureFixture, record: str
) -> None:
    """The listen socket is still adopted; the rest is left out, with a warning."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        os.dup2(listener.fileno(), reloader.LISTEN_FD, inheritable=True)
    listen_env.setenv("LISTEN_FDS", "1")
    listen_env.setenv("LISTEN_PID", str(os.getpid()))
    listen_env.setenv(reloader.HANDOVER_ENV, record)
    with caplog.at_level(logging.WARNING, logger="devserve.reloader"):
        handover = reloader.Handover.decode()
    assert handover.listener is not None
    try:
        assert handover == reloader.Handover(listener=handover.listener)
        assert "hand-over is malformed" in caplog.text
        assert reloader.HANDOVER_ENV not in os.environ
    finally:
        handover.listener.detach()


def test_encode_places_every_descriptor_on_its_slot() -> None:
    """What encode() hands to the exec: the descriptors in slot order and the variables
    that name each slot, which decode() reads back."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(4)]
        listener, first, second, evented = sockets
        handover = reloader.Handover(
            listener=listener,
            connections=[(first, b""), (second, b"\x00\xffPOST")],
            workers=[reloader.HandedWorker(10, 1, 99), reloader.HandedWorker(11, 3, 98)],
            evented=reloader.HandedChildren(evented, (12,)),
        )
        passed, variables = handover.encode(pid=4321)
        assert passed == [
            listener.fileno(),
            first.fileno(),
            second.fileno(),
            99,
            98,
            evented.fileno(),
        ]
    assert variables["LISTEN_FDS"] == "1"
    assert variables["LISTEN_PID"] == "4321"
    record = json.loads(variables[reloader.HANDOVER_ENV])
    assert record == {
        "connections": [[4, ""], [5, "AP9QT1NU"]],
        "workers": [[10, 1, 6], [11, 3, 7]],
        "evented": [8, [12]],
        "watched": [],
        "debugger_failures": 0,
    }
