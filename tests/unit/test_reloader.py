from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.test import Client

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
    assert reloader.check_syntax([str(broken)]) == [
        "shop/models.py, line 2: expected ':'\n    if lines"
    ]


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
    assert [p.split(",")[0] for p in problems] == ["addons/shop/broken.py"]
    cached = Path(importlib.util.cache_from_source(str(addon / "views.py")))
    assert cached.read_bytes()[4:8] == b"\x03\x00\x00\x00"  # flags: checked hash


def test_check_syntax_one_message_per_broken_file_in_order(cwd: Path) -> None:
    (cwd / "b.py").write_text("x = (1,\n", encoding="utf-8")
    (cwd / "a.py").write_text("print 'hello'\n", encoding="utf-8")
    (cwd / "ok.py").write_text("x = 1\n", encoding="utf-8")
    problems = reloader.check_syntax([str(cwd / name) for name in ("b.py", "ok.py", "a.py")])
    assert len(problems) == 2
    assert problems[0].startswith("a.py, line 1: Missing parentheses in call to 'print'")
    assert problems[0].endswith("\n    print 'hello'")
    assert problems[1].startswith("b.py, line 1: ")
    assert "never closed" in problems[1]


def test_check_syntax_null_byte(cwd: Path) -> None:
    (cwd / "nul.py").write_bytes(b"x = 1\n\0\n")
    [problem] = reloader.check_syntax([str(cwd / "nul.py")])
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


def test_reload_started_reads_and_removes_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    sent = Reload("shop/models.py, app.py and 2 more", 1234.5, 1234.625, 0.0)
    exec_at = 1234.75
    # as reexec() writes it
    timing = f"{sent.first_seen} {sent.decided} {exec_at} {sent.cause}"
    monkeypatch.setenv(reloader.RELOAD_ENV, timing)
    assert reloader.reload_started() == Reload(
        "shop/models.py, app.py and 2 more", 1234.5, 1234.625, 1234.75
    )
    assert reloader.RELOAD_ENV not in os.environ
    assert reloader.reload_started() is None


@pytest.mark.parametrize(
    "value", ["", "soon", "1.0 2.0 3.0", "1.0 later 3.0 app.py", "1.0 2.0 3.0x app.py"]
)
def test_reload_started_malformed(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(reloader.RELOAD_ENV, value)
    assert reloader.reload_started() is None
    assert reloader.RELOAD_ENV not in os.environ


def test_reload_started_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(reloader.RELOAD_ENV, raising=False)
    assert reloader.reload_started() is None


# --- adopt_socket ---


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
    assert reloader.adopt_socket() is None
    assert os.environ["LISTEN_FDS"] == "1"
    assert os.environ["LISTEN_PID"] == str(os.getpid() + 1)


def test_adopt_socket_without_variables(listen_env: pytest.MonkeyPatch) -> None:
    assert reloader.adopt_socket() is None


def test_adopt_socket_takes_fd_3(listen_env: pytest.MonkeyPatch, fd3: None) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        os.dup2(listener.fileno(), reloader.LISTEN_FD, inheritable=True)
        address = listener.getsockname()
    listen_env.setenv("LISTEN_FDS", "1")
    listen_env.setenv("LISTEN_PID", str(os.getpid()))
    listen_env.setenv("LISTEN_FDNAMES", "http")
    adopted = reloader.adopt_socket()
    assert adopted is not None
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
        assert reloader.adopt_socket() is None
    [record] = [r for r in caplog.records if r.name == "devserve.reloader"]
    assert record.levelno == logging.WARNING
    assert "LISTEN_FDS=2" in record.getMessage()
    assert "LISTEN_FDS" not in os.environ
    assert "LISTEN_PID" not in os.environ


# --- broken code ---


def raise_chain(tmp_path: Path) -> BaseException:
    """RuntimeError from a SyntaxError in broken.py (a file no frame runs), itself caused
    by a ValueError raised in helper.py through a module whose file does not exist."""
    helper = tmp_path / "helper.py"
    helper.write_text("def boom(inner):\n    inner()\n", encoding="utf-8")
    broken = tmp_path / "broken.py"
    broken.write_text("x = (\n", encoding="utf-8")
    namespace: dict[str, object] = {}
    exec(compile(helper.read_text(encoding="utf-8"), str(helper), "exec"), namespace)
    ghost = str(tmp_path / "ghost.py")  # never written
    exec(compile("def inner():\n    raise ValueError('bad value')\n", ghost, "exec"), namespace)
    try:
        try:
            namespace["boom"](namespace["inner"])  # type: ignore[operator]
        except ValueError as first:
            try:
                compile(broken.read_text(encoding="utf-8"), str(broken), "exec")
            except SyntaxError as syntax:
                raise syntax from first
    except SyntaxError as syntax:
        try:
            raise RuntimeError("app failed") from syntax
        except RuntimeError as error:
            return error
    raise AssertionError("nothing raised")


def test_traceback_files(tmp_path: Path) -> None:
    error = raise_chain(tmp_path)
    assert reloader.traceback_files(error) == sorted(
        [str(tmp_path / "broken.py"), str(tmp_path / "helper.py"), __file__]
    )


def test_traceback_files_of_a_syntax_error_without_traceback(tmp_path: Path) -> None:
    source = tmp_path / "typo.py"
    source.write_text("def f(:\n", encoding="utf-8")
    error = SyntaxError("invalid syntax", (str(source), 1, 7, "def f(:\n"))
    assert reloader.traceback_files(error) == [str(source)]
    missing = SyntaxError("invalid syntax", (str(tmp_path / "gone.py"), 1, 1, "x"))
    assert reloader.traceback_files(missing) == []


def failing_app(message: str) -> BaseException:
    try:
        try:
            raise ValueError(message)
        except ValueError as cause:
            raise RuntimeError(f"importing 'shop' failed: {message}") from cause
    except RuntimeError as error:
        return error


def test_error_app_plain_text_by_default() -> None:
    error = failing_app("price must be positive")
    response = Client(reloader.error_app(error)).get("/any/path")
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    text = response.text
    assert text.startswith("importing 'shop' failed: price must be positive\n\nTraceback")
    assert "ValueError: price must be positive" in text
    assert "failing_app" in text  # the frame that raised the cause
    assert text.endswith("devserve reloads when a watched file changes.\n")


def test_error_app_html_for_browsers() -> None:
    error = failing_app("price must be positive")
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    response = Client(reloader.error_app(error)).post("/", headers={"Accept": accept})
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    page = response.text
    assert page.startswith("<!doctype html>")
    assert "<p>importing &#x27;shop&#x27; failed: price must be positive</p>" in page
    assert "ValueError: price must be positive" in page


def test_error_app_escapes_html() -> None:
    error = failing_app("<script>alert('x')</script>")
    response = Client(reloader.error_app(error)).get("/", headers={"Accept": "text/html"})
    page = response.text
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    # once in the summary, once in the traceback's last line
    assert page.count("&lt;script&gt;") == 2


@pytest.mark.parametrize("accept", ["", "text/html"])
def test_error_app_content_length_counts_bytes(accept: str) -> None:
    error = failing_app("prix en € pour le café")
    response = Client(reloader.error_app(error)).get("/", headers={"Accept": accept})
    assert "prix en € pour le café" in response.text
    assert int(response.headers["Content-Length"]) == len(response.data)
    assert len(response.data) > len(response.text)  # multi-byte characters


def test_error_app_without_cause_shows_the_error_itself() -> None:
    try:
        raise ImportError("no module named 'shop'")
    except ImportError as error:
        app = reloader.error_app(error)
    text = Client(app).get("/").text
    assert text.startswith("no module named 'shop'\n\nTraceback")
    assert "ImportError: no module named 'shop'" in text
    assert __file__ in text


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
