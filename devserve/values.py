"""The settings' values: a string from the command line, the environment or the config
file turned into a value (one parser per kind: ports, seconds, sizes, folders that must
exist...), each failing with a :class:`~devserve.errors.ConfigError` that says what is
expected, and :func:`format_value`, their inverse. :mod:`devserve.config` declares which
setting takes which."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

# --dev values known so far, and what "all" expands to: every value that needs no terminal.
POST_MORTEM = ("pdb", "ipdb", "pudb")  # --dev values that open a debugger on the terminal
DEV_MODES = ("reload", "werkzeug", *POST_MORTEM)
DEV_ALL = ("reload", "werkzeug")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")

Parser = Callable[[str], Any]


# --- value parsers: a string from the command line, the environment or a file -> a value ---
# Each raises ValueError with a message that completes "invalid value for <option>: ...".


def parse_bool(text: str) -> bool:
    word = text.strip().lower()
    if word in ("1", "yes", "true", "on"):
        return True
    if word in ("0", "no", "false", "off", ""):
        return False
    raise ValueError(f"{text!r} is not a yes/no value (use true or false)")


def parse_int(text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None


def parse_positive_int(text: str) -> int:
    number = parse_int(text)
    if number < 1:
        raise ValueError(f"{text!r} must be 1 or more")
    return number


def parse_seconds(text: str) -> float:
    try:
        seconds = float(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not a number of seconds") from None
    if seconds < 0:
        raise ValueError(f"{text!r} must not be negative")
    return seconds


def parse_seconds_or_inherit(text: str) -> float:
    """Seconds (0: no limit), or -1: the value of the setting this one falls back on."""
    if text.strip() in ("-1", "-1.0"):
        return -1.0
    if text.strip().startswith("-"):
        raise ValueError(f"{text!r} must be -1 (the fallback), 0 (no limit) or more")
    return parse_seconds(text)


def parse_non_negative_int(text: str) -> int:
    number = parse_int(text)
    if number < 0:
        raise ValueError(f"{text!r} must be 0 or more")
    return number


_SIZE_UNITS = {"": 1, "k": 1 / 1024, "m": 1, "g": 1024}


def parse_mebibytes(text: str) -> int:
    """A memory size in MiB: ``2048``, ``2048M``, ``512MiB``, ``2G``; 0 means no limit."""
    match = re.fullmatch(r"\s*(\d+)\s*([kmg]?)(?:i?b)?\s*", text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a memory size (MiB, or with a unit: 512M, 2G)")
    return int(int(match[1]) * _SIZE_UNITS[match[2]])


def parse_port(text: str) -> int:
    try:
        port = int(text.strip())
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ValueError(f"{text!r} is not a port number (0-65535; 0 picks a free port)")
    return port


def parse_str(text: str) -> str:
    return text.strip()


def parse_path(text: str) -> str:
    return os.path.abspath(os.path.expanduser(text.strip()))


def split_commas(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _existing(text: str, exists: Callable[[str], bool], problem: str) -> tuple[str, ...]:
    """Comma-separated paths, each made absolute; ``problem`` (formatted with ``item``) is
    the error for one that fails ``exists``."""
    paths = [(item, parse_path(item)) for item in split_commas(text)]
    for item, path in paths:
        if not exists(path):
            raise ValueError(problem.format(item=item))
    return tuple(path for _item, path in paths)


# Set in a process image that a reload started: its command line was accepted by the
# image before, and an addons folder gone meanwhile (a checkout, rm -rf) is broken code to
# serve an error page for, not a reason to exit.
FOLDERS_MAY_BE_GONE = False


def parse_addons_path(text: str) -> tuple[str, ...]:
    if FOLDERS_MAY_BE_GONE:
        return tuple(parse_path(item) for item in split_commas(text))
    return _existing(
        text, os.path.isdir, "addons path {item!r} does not exist or is not a directory"
    )


def parse_existing_paths(text: str) -> tuple[str, ...]:
    return _existing(text, os.path.exists, "{item!r} does not exist")


def parse_list(text: str) -> tuple[str, ...]:
    return tuple(split_commas(text))


RELOAD_BACKENDS = ("auto", "inotify", "watchdog", "poll")


def parse_reload_backend(text: str) -> str:
    name = text.strip().lower()
    if name not in RELOAD_BACKENDS:
        raise ValueError(f"{text!r} is not a reload backend ({', '.join(RELOAD_BACKENDS)})")
    return name


RELOAD_MODES = ("warm", "exec")


def parse_reload_mode(text: str) -> str:
    name = text.strip().lower()
    if name not in RELOAD_MODES:
        raise ValueError(f"{text!r} is not a reload mode ({', '.join(RELOAD_MODES)})")
    return name


def parse_dev(text: str) -> tuple[str, ...]:
    modes: list[str] = []
    for item in split_commas(text):
        expanded = DEV_ALL if item == "all" else (item,)
        for mode in expanded:
            if mode not in DEV_MODES:
                valid = ", ".join((*DEV_MODES, "all"))
                raise ValueError(f"unknown --dev option {item!r} (valid: {valid})")
            if mode not in modes:
                modes.append(mode)
    return tuple(modes)


def parse_log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in LOG_LEVELS:
        raise ValueError(f"{text!r} is not a log level ({', '.join(LOG_LEVELS)})")
    return level


def format_value(value: Any) -> str:
    """The inverse of the parsers, for ``--save`` and the reference table."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (tuple, list)):
        return ",".join(str(item) for item in value)
    return str(value)
