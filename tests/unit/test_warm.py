"""The warm parent's parts that need no process: the parent-child channel, the hand-over
carried over it, the preload and its project guard."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from devserve._engine.preload import Preloaded, ProjectGuard, imported_since, preload
from devserve._engine.warm import FDS_PER_PACKET, PACKET, Channel
from devserve.reloader import Handover, Reload


@pytest.fixture
def channel() -> Iterator[tuple[Channel, Channel]]:
    parent, child = Channel.pair()
    yield parent, child
    parent.close()
    child.close()


def test_a_message_with_many_descriptors_and_a_big_body_arrives_whole(
    channel: tuple[Channel, Channel],
) -> None:
    parent, child = channel
    pipes = [os.pipe() for _ in range(FDS_PER_PACKET * 2 + 10)]  # three packets of them
    body = "x" * (PACKET * 3)  # four packets of text
    try:
        child.send({"kind": "test", "body": body}, [write for _read, write in pipes])
        received = parent.receive()
        assert received is not None
        message, fds = received
        assert message == {"kind": "test", "body": body}
        assert len(fds) == len(pipes)
        # In order: each is its pipe's write end.
        for fd, (read, _write) in zip(fds, pipes, strict=True):
            os.write(fd, b"!")
            assert os.read(read, 1) == b"!"
            os.close(fd)
    finally:
        for read, write in pipes:
            os.close(read)
            os.close(write)


def test_receive_says_when_the_other_end_is_gone(channel: tuple[Channel, Channel]) -> None:
    parent, child = channel
    child.close()
    assert parent.receive() is None


def test_a_handover_travels_over_the_channel(channel: tuple[Channel, Channel]) -> None:
    """What a warm child hands back: the connections with the bytes read of them, and the
    reload's timings and files; the parent's own listen socket takes the first slot."""
    parent, child = channel
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        ours, theirs = socket.socketpair()
        stack.callback(ours.close)
        stack.callback(theirs.close)
        reload = Reload("shop/views.py", 1.0, 2.0, 3.0, "warm", frozenset({"/p/shop/views.py"}))
        handed = Handover(
            listener=listener,
            reload=reload,
            connections=[(theirs, b"GET / HTTP/1.1\r\nHo")],
            watched=["/p/extra"],
            debugger_failures=2,
        )
        fds, record = handed.to_record()
        child.send({"record": record}, fds)
        received = parent.receive()
        assert received is not None
        message, descriptors = received
        kept = stack.enter_context(socket.create_server(("127.0.0.1", 0)))
        back = Handover.from_record(message["record"], descriptors, kept)
        assert back.listener is kept
        assert back.reload == reload
        assert back.watched == ["/p/extra"] and back.debugger_failures == 2
        (connection, received_bytes), *rest = back.connections
        assert rest == [] and received_bytes == b"GET / HTTP/1.1\r\nHo"
        stack.callback(connection.close)
        connection.sendall(b"pong")
        assert ours.recv(4) == b"pong"  # the same connection, from the other side


def test_a_handover_record_naming_a_slot_it_lacks_is_refused() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        record = {"connections": [[9, ""]], "workers": [], "watched": [], "debugger_failures": 0}
        spare = os.dup(listener.fileno())
        with pytest.raises(ValueError, match="not a handed descriptor"):
            Handover.from_record(record, [spare], listener)


def test_a_warm_reload_summary_says_load() -> None:
    reload = Reload("a.py", 1.0, 1.010, 1.012, kind="warm")
    assert reload.summary(1.025) == "a.py (settle 10 + drain 2 + load 13)"


# --- the preload and its guard ---


@pytest.fixture
def tree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A project folder and a library folder, both on sys.path; what the test imports from
    them is forgotten afterwards."""
    project, library = tmp_path / "project", tmp_path / "library"
    project.mkdir()
    library.mkdir()
    (project / "shopapp.py").write_text("VALUE = 'project'\n")
    (library / "goodlib.py").write_text("VALUE = 'library'\n")
    (library / "readsproject.py").write_text("import shopapp\n")  # as Django settings do
    (library / "startsthread.py").write_text(
        "import threading, time\nthreading.Thread(target=time.sleep, args=(0.2,), daemon=True,"
        " name='started-by-an-import').start()\n"
    )
    before = set(sys.modules)
    monkeypatch.syspath_prepend(str(library))
    yield project
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_the_guard_refuses_the_projects_modules(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(tree))
    guard = ProjectGuard([str(tree)])
    monkeypatch.setattr(sys, "meta_path", [guard, *sys.meta_path])
    with pytest.raises(ImportError, match="shopapp is the project's"):
        import shopapp  # noqa: F401
    import goodlib

    assert goodlib.VALUE == "library"


def test_preload_imports_the_library_and_skips_what_reads_the_project(tree: Path) -> None:
    done = Preloaded()
    preload(["goodlib", "readsproject"], [str(tree)], [str(tree)], done)
    assert "goodlib" in sys.modules
    assert "readsproject" not in sys.modules and "shopapp" not in sys.modules
    assert done.failed == 1 and done.broken == ""
    assert str(Path(sys.modules["goodlib"].__file__ or "")) in done.files
    preload(["goodlib"], [str(tree)], [], done)  # asked before: nothing more happens
    assert done.failed == 1


def test_a_preload_that_starts_a_thread_turns_warm_reloads_off(tree: Path) -> None:
    done = Preloaded()
    preload(["startsthread"], [str(tree)], [], done)
    assert "started a thread" in done.broken
    for thread in threading.enumerate():  # the next tests count threads too
        if thread.name == "started-by-an-import":
            thread.join(5)


def test_imported_since_leaves_out_the_project(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tree))
    before = set(sys.modules)
    import goodlib  # noqa: F401
    import shopapp  # noqa: F401

    assert imported_since(before, ProjectGuard([str(tree)])) == ["goodlib"]


def test_a_handover_record_handing_a_descriptor_twice_adopts_none() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        spare, ours = os.dup(listener.fileno()), socket.socketpair()
        record = {
            "connections": [[4, ""], [4, ""]],
            "workers": [],
            "watched": [],
            "debugger_failures": 0,
        }
        try:
            with pytest.raises(ValueError, match="handed twice"):
                Handover.from_record(record, [spare, ours[0].fileno()], listener)
            ours[0].sendall(b"x")  # still open: nothing wrapped it, nothing closed it
            assert ours[1].recv(1) == b"x"
        finally:
            ours[0].close()
            ours[1].close()


def test_a_message_cut_short_is_dropped_with_its_descriptors(
    channel: tuple[Channel, Channel], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sender died after the first packet: the receiver waits a little, then drops the
    message and closes what came with it (it does not hang for the rest)."""
    parent, child = channel
    monkeypatch.setattr("devserve._engine.warm.REST_OF_MESSAGE", 0.1)
    read, write = os.pipe()
    try:
        before = len(os.listdir("/proc/self/fd"))
        socket.send_fds(child.sock, [b'+{"kind": '], [write])
        assert parent.receive() == ({}, [])
        assert len(os.listdir("/proc/self/fd")) == before  # the received copy was closed
    finally:
        os.close(read)
        os.close(write)


def test_a_malformed_message_is_dropped(channel: tuple[Channel, Channel]) -> None:
    parent, child = channel
    socket.send_fds(child.sock, [b".not json"], [])
    assert parent.receive() == ({}, [])
    child.send({"kind": "serving"})
    assert parent.receive() == ({"kind": "serving"}, [])


def test_preload_stops_at_its_deadline_and_returns_the_rest(tree: Path) -> None:
    """The warm parent preloads a slice at a time between events: what the deadline left
    comes back, and is imported by a later call."""
    done = Preloaded()
    left = preload(["goodlib", "readsproject"], [str(tree)], [], done, until=0.0)
    assert left == ["goodlib", "readsproject"] and "goodlib" not in sys.modules
    assert preload(left, [str(tree)], [str(tree)], done) == []
    assert "goodlib" in sys.modules and done.imported == 1 and done.failed == 1
