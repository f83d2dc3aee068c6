from __future__ import annotations

import pytest

from devserve import errors
from devserve.errors import ExitCode, exception_summary


def test_summary_of_a_syntax_error_names_file_and_line() -> None:
    with pytest.raises(SyntaxError) as caught:
        compile("x = 1\ny = (\n", "app/wsgi.py", "exec")
    assert exception_summary(caught.value) == (
        "SyntaxError: '(' was never closed (app/wsgi.py, line 2)"
    )


def test_summary_of_a_syntax_error_without_file_is_the_plain_message() -> None:
    assert exception_summary(SyntaxError("bad syntax")) == "SyntaxError: bad syntax"


def _fail_deep() -> None:
    values: dict[str, int] = {}
    values["missing"] += 1  # the innermost frame: the line the summary names


def _fail() -> None:
    _fail_deep()


def test_summary_of_a_raised_exception_names_the_innermost_frame() -> None:
    with pytest.raises(KeyError) as caught:
        _fail()
    line = _fail_deep.__code__.co_firstlineno + 2
    assert exception_summary(caught.value) == f"KeyError: 'missing' ({__file__}, line {line})"


def test_summary_of_an_exception_never_raised_has_no_location() -> None:
    assert exception_summary(ValueError("no traceback")) == "ValueError: no traceback"


def test_summary_of_a_name_error() -> None:
    namespace: dict[str, object] = {}
    with pytest.raises(NameError) as caught:
        exec(compile("import os\n\nvalue = undefined_name\n", "brokenapp.py", "exec"), namespace)
    assert exception_summary(caught.value) == (
        "NameError: name 'undefined_name' is not defined (brokenapp.py, line 3)"
    )


@pytest.mark.parametrize(
    ("kind", "code"),
    [
        (errors.DevserveError, ExitCode.FAILURE),
        (errors.UsageError, ExitCode.USAGE),
        (errors.ConfigError, ExitCode.CONFIG),
        (errors.AppLoadError, ExitCode.APP_LOAD),
        (errors.BindError, ExitCode.BIND),
    ],
)
def test_each_error_kind_has_its_exit_code(kind: type[errors.DevserveError], code: int) -> None:
    error = kind("message")
    assert error.exit_code == code
    assert isinstance(error, errors.DevserveError)
    assert str(error) == "message"


def test_exit_codes_are_distinct_and_stable() -> None:
    assert {code.name: int(code) for code in ExitCode} == {
        "OK": 0,
        "FAILURE": 1,
        "USAGE": 2,
        "CONFIG": 3,
        "APP_LOAD": 4,
        "BIND": 5,
        "FORCED": 6,
    }


@pytest.mark.parametrize(
    ("interface", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.6.7", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.1", False),
        ("no-such-host.invalid", False),
    ],
)
def test_is_loopback(interface: str, loopback: bool) -> None:
    from devserve.debug import is_loopback

    assert is_loopback(interface) is loopback


def test_debugger_safety_names_the_way_out() -> None:
    from devserve.debug import check_debugger_safety
    from devserve.errors import ConfigError

    check_debugger_safety("127.0.0.1", allow_remote=False)
    check_debugger_safety("0.0.0.0", allow_remote=True)
    with pytest.raises(ConfigError, match="--debugger-allow-remote"):
        check_debugger_safety("0.0.0.0", allow_remote=False)


def test_post_mortem_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from devserve.debug import check_post_mortem
    from devserve.errors import ConfigError

    assert check_post_mortem(("reload",), terminal=False) is None
    assert check_post_mortem(("pdb",), terminal=True) == "pdb"
    with pytest.raises(ConfigError, match="choose one"):
        check_post_mortem(("pdb", "pudb"), terminal=True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="pip install ipdb"):
        check_post_mortem(("ipdb",), terminal=True)
