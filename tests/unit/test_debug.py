"""The debugger wrapper: what it keeps of tracebacks, and its count of wrong PINs."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.test import Client

from devserve import debug


def failing(environ: Any, start_response: Any) -> Any:
    raise ValueError("boom")


def test_only_the_frames_of_the_last_tracebacks_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(debug, "KEPT_FRAMES", 30)
    app = debug.debugger(failing, "127.0.0.1", "off", [])
    client = Client(app)
    client.get("/", headers={"Accept": "text/html"})
    first = dict(app.frames)  # holds them: their ids are not taken by later frames
    assert first
    app.frames[0] = "the console's"  # the standalone console's frame stays
    for _ in range(50):
        assert client.get("/").status_code == 500
    assert len(app.frames) <= 30 + len(first)  # the cap, give or take one traceback
    assert 0 in app.frames and not set(first) & set(app.frames)  # the oldest went first
    assert set(app.frame_contexts) <= set(app.frames)


def test_tracebacks_from_many_threads_never_pile_up(monkeypatch: pytest.MonkeyPatch) -> None:
    import concurrent.futures

    monkeypatch.setattr(debug, "KEPT_FRAMES", 50)
    app = debug.debugger(failing, "127.0.0.1", "off", [])
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: Client(app).get("/").status_code, range(400)))
    assert len(app.frames) <= 50 + 8 * 5  # a traceback per thread may land meanwhile


def test_the_count_of_wrong_pins_goes_to_the_next_image() -> None:
    first = debug.debugger(failing, "127.0.0.1", "123-456-789", [])
    assert debug.failed_pins(first) == 0
    assert debug.failed_pins(None) == 0  # no debugger: nothing to hand over
    first._failed_pin_auth.value = 10
    second = debug.debugger(failing, "127.0.0.1", "123-456-789", [], debug.failed_pins(first))
    assert second._failed_pin_auth.value == 10
    third = debug.debugger(failing, "127.0.0.1", "123-456-789", [], failures=1000)
    assert third._failed_pin_auth.value == 255  # Werkzeug's counter is a byte


@pytest.mark.parametrize(
    ("host", "trusted"),
    [("[::1]:8069", True), ("[::1]", True), ("[::2]:8069", False), ("localhost:8069", True)],
)
def test_ipv6_loopback_hosts_are_trusted(host: str, trusted: bool) -> None:
    app = debug.debugger(failing, "::1", "off", [])
    assert app.check_host_trust({"HTTP_HOST": host}) is trusted
