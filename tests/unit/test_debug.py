"""The debugger wrapper: what it keeps of tracebacks, and its count of wrong PINs."""

from __future__ import annotations

import os
from typing import Any

import pytest
from werkzeug.test import Client

from devserve import debug


def failing(environ: Any, start_response: Any) -> Any:
    raise ValueError("boom")


def test_only_the_frames_of_the_last_tracebacks_are_kept() -> None:
    app = debug.debugger(failing, "127.0.0.1", "off", [])
    client = Client(app)
    client.get("/", headers={"Accept": "text/html"})
    per_traceback = len(app.frames)
    assert per_traceback > 0
    for _ in range(debug.KEPT_TRACEBACKS + 30):
        assert client.get("/").status_code == 500
    assert len(app.frames) == per_traceback * debug.KEPT_TRACEBACKS
    assert len(app.frame_contexts) == len(app.frames)


def test_the_count_of_wrong_pins_goes_to_the_next_image(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(debug.FAILURES_ENV, raising=False)
    first = debug.debugger(failing, "127.0.0.1", "123-456-789", [])
    debug.hand_over_failures(first)  # none yet: nothing handed over
    assert debug.FAILURES_ENV not in os.environ
    first._failed_pin_auth.value = 10
    debug.hand_over_failures(first)
    second = debug.debugger(failing, "127.0.0.1", "123-456-789", [])
    assert second._failed_pin_auth.value == 10
    assert debug.FAILURES_ENV not in os.environ  # taken once


@pytest.mark.parametrize(
    ("host", "trusted"),
    [("[::1]:8069", True), ("[::1]", True), ("[::2]:8069", False), ("localhost:8069", True)],
)
def test_ipv6_loopback_hosts_are_trusted(host: str, trusted: bool) -> None:
    app = debug.debugger(failing, "::1", "off", [])
    assert app.check_host_trust({"HTTP_HOST": host}) is trusted
