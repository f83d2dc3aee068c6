"""Errors a user can cause, and the exit code each one ends with.

Library code raises these; the entry points (:mod:`devserve.cli`, :mod:`devserve.wsgi`) turn
them into an exit code and a one-sentence message on stderr with :func:`report`.
"""

from __future__ import annotations

import enum
import logging
import sys

__all__ = [
    "AppLoadError",
    "BindError",
    "ConfigError",
    "DevserveError",
    "ExitCode",
    "NotWSGIError",
    "UsageError",
    "exception_summary",
    "report",
]

PROG = "devserve"

_logger = logging.getLogger("devserve.cli")


class ExitCode(enum.IntEnum):
    """Every way devserve can end."""

    OK = 0
    FAILURE = 1  # an unexpected error (a bug in devserve: please report it)
    USAGE = 2  # unknown command or option, bad value on the command line
    CONFIG = 3  # bad config file, environment variable or addons path
    APP_LOAD = 4  # the app or an addon could not be imported
    BIND = 5  # the listen socket could not be opened
    FORCED = 6  # a second INT/TERM cut the graceful stop short


class DevserveError(Exception):
    """An error with a message meant for the user, naming the fix."""

    exit_code: ExitCode = ExitCode.FAILURE


class UsageError(DevserveError):
    exit_code = ExitCode.USAGE


class ConfigError(DevserveError):
    exit_code = ExitCode.CONFIG


class AppLoadError(DevserveError):
    exit_code = ExitCode.APP_LOAD


class NotWSGIError(AppLoadError):
    """The app is no WSGI callable (an ASGI app): refused at start, even with --dev reload."""


class BindError(DevserveError):
    exit_code = ExitCode.BIND


def exception_summary(error: BaseException) -> str:
    """``NameError: name 'x' is not defined (app/wsgi.py, line 3)``: the exception and where it
    was raised, for one-line error messages. The innermost frame is the one the user wrote."""
    import traceback

    text = f"{type(error).__name__}: {error}"
    if isinstance(error, SyntaxError) and error.filename:
        return f"{type(error).__name__}: {error.msg} ({error.filename}, line {error.lineno})"
    frames = traceback.extract_tb(error.__traceback__)
    if frames:
        last = frames[-1]
        text += f" ({last.filename}, line {last.lineno})"
    return text


def report(error: DevserveError) -> int:
    """Say what went wrong in one line on stderr; the exit code it ends with."""
    _logger.debug("error details", exc_info=error)
    print(f"{PROG}: error: {error}", file=sys.stderr)
    return error.exit_code
