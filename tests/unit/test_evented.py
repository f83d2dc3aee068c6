"""The prefork master's side of gevent mode: the evented child's settings, and the option's
value when given without a port. (The server itself runs in tests/integration/test_gevent.py.)"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from devserve import config
from devserve._engine import evented_child
from devserve.config import Settings


def parse(*args: str) -> dict[str, object]:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return vars(parser.parse_args(args))


def test_gevent_port_without_a_value_is_8072() -> None:
    assert parse("--gevent-port")["gevent_port"] == 8072
    assert parse("--gevent-port", "9000")["gevent_port"] == 9000
    assert "gevent_port" not in parse()  # not given: the lower layers show through


def test_child_environment_carries_the_settings_for_one_evented_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVSERVE_PIDFILE", "/stale/from/the/shell")
    settings = Settings(
        addons_path=(str(tmp_path),),
        workers=4,
        gevent_port=8072,
        http_port=8069,
        dev=("reload", "werkzeug", "pdb"),
        pidfile=str(tmp_path / "master.pid"),
        limit_memory_soft=512,
    )
    env = evented_child.child_environment(settings, 8072)
    # Read back as the child will: the environment layer alone gives it its settings.
    child = config.read_env(env)
    assert child["workers"] == 0
    assert child["http_port"] == 8072
    # No terminal for a post-mortem; "reload" stays (the error page, the framework
    # integration), though the child never watches: its master does.
    assert child["dev"] == ("reload", "werkzeug")
    assert child["addons_path"] == (str(tmp_path),)
    assert child["limit_memory_soft"] == 512
    assert "pidfile" not in child and "gevent_port" not in child
    assert env[evented_child.PARENT_ENV].isdigit()
    assert env[evented_child.SOCKET_ENV] == str(evented_child.CHILD_FD)
