"""The command line: ``devserve [COMMAND] [OPTIONS] [TARGET]``.

Commands register themselves by subclassing :class:`Command`. ``server`` is the default:
``devserve examples/addons`` is ``devserve server examples/addons``. A name that is no
built-in command is looked for in the addons path, as ``<addon>/cli/<name>.py``
(:mod:`devserve.addon_commands`). This module is the only one that chooses exit codes: a
:class:`DevserveError` becomes its one-sentence message on stderr and its code; nothing a
user can cause ends in a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn

from devserve import config, values
from devserve.errors import PROG, DevserveError, ExitCode, UsageError, report

if TYPE_CHECKING:
    from devserve.addon_commands import Found

__all__ = ["Command", "Help", "Reload", "Scaffold", "Server", "Status", "Stop", "main"]

DEFAULT_COMMAND = "server"

_logger = logging.getLogger(__name__)

COMMANDS: dict[str, type[Command]] = {}  # filled by Command.__init_subclass__


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's, given the terminal width: argparse would import ``shutil`` (with ``bz2``
    and ``lzma``) for it at every start and reload, though only ``--help`` uses it."""

    def __init__(self, prog: str, **kwargs: Any) -> None:
        kwargs.setdefault("width", _terminal_columns() - 2)
        super().__init__(prog, **kwargs)


def _terminal_columns() -> int:
    """What ``shutil.get_terminal_size()`` says: ``COLUMNS``, else the terminal, else 80."""
    with contextlib.suppress(ValueError):
        if (columns := int(os.environ.get("COLUMNS", "0"))) > 0:
            return columns
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 80


class ArgumentParser(argparse.ArgumentParser):
    """Reports bad input as a UsageError instead of printing usage and exiting."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        if message.startswith("argument "):
            # A bad value: the parser's message already names the option and the problem.
            raise UsageError(message.removeprefix("argument "))
        raise UsageError(f"{message}; run '{self.prog} --help' to see the options")


class Command:
    """Base of every command. A subclass registers itself under its lowercased class name
    (or ``name``); the first line of its docstring is its summary in ``devserve help``.
    ``run(args)`` gets the words of the command line but the command's name, and returns
    the exit code."""

    name: ClassVar[str]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        name = cls.__dict__.get("name") or cls.__name__.lower()
        if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
            raise ValueError(f"command name {name!r} must match [a-z][a-z0-9_]*")
        if COMMANDS.get(name, cls) is not cls:
            raise ValueError(
                f"command {name!r} of {_source(cls)} is already defined in "
                f"{_source(COMMANDS[name])}; give it another name"
            )
        cls.name = name
        COMMANDS[name] = cls

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""

    def run(self, args: list[str]) -> int:
        raise NotImplementedError


def version() -> str:
    """``devserve 0.1.0 (Python 3.11.7)``."""
    from devserve._version import __version__

    return f"{PROG} {__version__} (Python {sys.version.split()[0]})"


def _source(command: type) -> str:
    """The file defining a command class (its module's name when it has none)."""
    module = sys.modules.get(command.__module__)
    return getattr(module, "__file__", None) or command.__module__


class Help(Command):
    """List the commands."""

    def run(self, args: list[str]) -> int:
        _paths, found = _addon_commands(args)
        for problem in found.problems:
            print(f"{PROG}: warning: {problem}", file=sys.stderr)
        rows = [(name, COMMANDS[name].summary()) for name in sorted(COMMANDS)]
        from_addons = [
            (name, f"{command.summary} [addon {command.addon}]".lstrip())
            for name, command in sorted(found.commands.items())
        ]
        width = max(len(name) for name, _summary in rows + from_addons)
        lines = [
            f"usage: {PROG} [COMMAND] [OPTIONS] [TARGET]",
            "",
            "Commands:",
            *(f"  {name:<{width}}  {summary}" for name, summary in rows),
        ]
        if from_addons:
            lines += ["", "Addon commands:"]
            lines += [f"  {name:<{width}}  {summary}" for name, summary in from_addons]
        lines += [
            "",
            f"With no command, '{DEFAULT_COMMAND}' runs. TARGET is an addons folder or a "
            "module:attribute WSGI app.",
            f"Addon commands are <addon>/cli/<name>.py files in the addons path ('{PROG} help "
            "DIRS' lists those of DIRS).",
            f"Run '{PROG} COMMAND --help' for the options of a command.",
        ]
        print("\n".join(lines))
        return ExitCode.OK


class Scaffold(Command):
    """Create an addon that serves right away: manifest, a routed page, a static file, a test."""

    def run(self, args: list[str]) -> int:
        parser = ArgumentParser(
            prog=f"{PROG} {self.name}",
            description="Create the addon NAME in the addons folder DEST: __manifest__.py, "
            "controllers.py with a page at /NAME, static/style.css and tests/test_NAME.py. "
            "An existing folder is never overwritten.",
        )
        parser.add_argument("addon", metavar="NAME", help="a Python identifier, e.g. my_shop")
        parser.add_argument(
            "dest",
            metavar="DEST",
            nargs="?",
            default=".",
            help="the addons folder to create it in, created if missing (default: the "
            "current directory)",
        )
        namespace = parser.parse_args(args)
        from devserve import scaffold

        folder = scaffold.create(namespace.addon, namespace.dest)
        print(
            f"created addon {namespace.addon!r} in {folder}\n"
            f"serve it with: {PROG} {os.path.dirname(folder)}  (then open /{namespace.addon})\n"
            f"test it with:  python -m pytest {os.path.join(folder, 'tests')}"
        )
        return ExitCode.OK


class Server(Command):
    """Serve an addons folder or a WSGI app (the default command)."""

    def parser(self) -> ArgumentParser:
        parser = ArgumentParser(
            prog=f"{PROG} {self.name}",
            description="Serve TARGET: an addons folder (every sub-folder with __init__.py "
            "and __manifest__.py is an addon) or a WSGI callable as module:attribute.",
            epilog="Settings are read from, lowest precedence first: defaults, the config "
            f"file, {config.ENV_PREFIX}<NAME> environment variables, the command line.",
        )
        parser.add_argument(
            "target",
            nargs="*",
            metavar="TARGET",
            help="addons folder(s), or module:attribute / module:factory()",
        )
        parser.add_argument(
            "-V", "--version", action="version", version=version(), help="print the version"
        )
        config.add_arguments(parser)
        return parser

    def settings(self, args: list[str]) -> config.Settings:
        namespace = vars(self.parser().parse_args(args))
        targets = namespace.pop("target")
        return config.resolve(config.merge_target(namespace, targets))

    def run(self, args: list[str]) -> int:
        from devserve import runtime

        return runtime.serve(self.settings(args))


class Gevent(Server):
    """Serve under gevent, a greenlet per connection: many idle connections (long-polling)."""

    def run(self, args: list[str]) -> int:
        from devserve import runtime

        runtime.check_gevent()  # before the arguments: the install hint comes first
        return runtime.serve(self.settings(args), evented=True)


class Status(Command):
    """Show what a running devserve is doing: reloads, requests in flight, workers, caches."""

    def parser(self) -> ArgumentParser:
        """Where the server is: its port, or its pidfile (by default, as ``DEVSERVE_PIDFILE``
        or ``DEVSERVE_HTTP_PORT`` say, else port 8069)."""
        parser = ArgumentParser(prog=f"{PROG} {self.name}", description=self.summary())
        where = parser.add_mutually_exclusive_group()
        where.add_argument(
            "-p",
            "--http-port",
            type=values.parse_port,
            metavar="PORT",
            help="the port it serves on (default: 8069)",
        )
        where.add_argument(
            "--pidfile", metavar="FILE", help="its pidfile: its PID, and the port it listens on"
        )
        parser.add_argument(
            "--http-interface",
            default="127.0.0.1",
            metavar="ADDRESS",
            help="the address it listens on (default: 127.0.0.1)",
        )
        return parser

    def where(self, args: list[str]) -> tuple[Any, argparse.Namespace]:
        """Where the server is, and the rest of the command line."""
        from devserve import control

        parser = self.parser()
        self.options(parser)
        namespace = parser.parse_args(args)
        found = control.locate(namespace.http_port, namespace.pidfile, namespace.http_interface)
        return found, namespace

    def options(self, parser: ArgumentParser) -> None:
        parser.add_argument("--json", action="store_true", help="print the status as JSON")

    def run(self, args: list[str]) -> int:
        from devserve import control

        where, namespace = self.where(args)
        control.show_status(where, namespace.json)
        return ExitCode.OK


class Reload(Status):
    """Reload a running devserve (HUP) and wait until its new code serves."""

    def options(self, parser: ArgumentParser) -> None:
        seconds = values.parse_seconds
        parser.add_argument("--timeout", type=seconds, default=60.0, help="seconds to wait")

    def run(self, args: list[str]) -> int:
        from devserve import control

        where, namespace = self.where(args)
        print(control.reload(where, namespace.timeout))
        return ExitCode.OK


class Stop(Reload):
    """Stop a running devserve (TERM) and wait until it has ended."""

    def run(self, args: list[str]) -> int:
        from devserve import control

        where, namespace = self.where(args)
        print(control.stop(where, namespace.timeout))
        return ExitCode.OK


def _looks_like_target(word: str) -> bool:
    return ":" in word or os.sep in word or word.startswith(".") or os.path.isdir(word)


# Options that may come before a command's name, to say where its addons are.
_LOCATING_OPTIONS = ("--addons-path", "-c", "--config")
_LOCATING_PREFIXES = ("--addons-path=", "--config=")


def _command_position(argv: list[str]) -> int | None:
    """Where the command's name is: after any words that locate addons (an addons folder,
    ``--addons-path DIRS``, ``-c FILE``). None when there is no name: an option or a target
    comes first, which is the default command's line."""
    position = 0
    while position < len(argv):
        word = argv[position]
        if word in COMMANDS:
            return position
        if word in _LOCATING_OPTIONS:
            position += 2
        elif word.startswith(_LOCATING_PREFIXES) or os.path.isdir(word):
            position += 1
        elif values.FOLDERS_MAY_BE_GONE and not word.startswith("-"):
            position += 1  # an addons folder gone since the image before took this line
        elif word.startswith("-") or _looks_like_target(word):
            return None
        else:
            return position
    return None


def _addon_commands(words: list[str], only: str | None = None) -> tuple[tuple[str, ...], Found]:
    """The addons path that ``words`` (or else the environment and the config file) give,
    and the addon commands found in it."""
    from devserve import addon_commands

    paths = Server().settings(words).addons_path
    reserved = {name: _source(command) for name, command in COMMANDS.items()}
    return paths, addon_commands.find(paths, reserved, only)


def _addon_command(name: str, before: list[str], after: list[str]) -> type[Command]:
    """The command ``name`` of the addons that the words around it locate (or else the
    environment and the config file), loaded from its file."""
    from devserve import addon_commands

    paths, found = _addon_commands(before + addon_commands.addons_path_options(after), only=name)
    if found.problems:
        raise found.problems[0]
    if name not in found.commands:
        known = ", ".join(sorted(COMMANDS))
        where = (
            f"no addon of {', '.join(paths)} has cli/{name}.py"
            if paths
            else "give --addons-path DIRS for an addon command"
        )
        raise UsageError(
            f"unknown command {name!r} (known commands: {known}; {where}); to serve a folder "
            "or an app, give an existing directory or module:attribute"
        )
    return addon_commands.load(found.commands[name], Command)


def _dispatch(argv: list[str]) -> int:
    if argv in (["-h"], ["--help"]):
        return Help().run([])
    from devserve import runtime

    if runtime.is_next_image():
        # A server's next image: the same command line, whatever became of its folders.
        values.FOLDERS_MAY_BE_GONE = True
    position = _command_position(argv)
    if position is None:
        return COMMANDS[DEFAULT_COMMAND]().run(argv)
    name, before, after = argv[position], argv[:position], argv[position + 1 :]
    command = COMMANDS.get(name) or _addon_command(name, before, after)
    return command().run(before + after)


def main(argv: Sequence[str] | None = None) -> int:
    """Run devserve; returns the exit code (the console script exits with it)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started as a background job of a script, which ignores INT: CTRL-C and `kill
        # -INT` must still stop devserve (a second one forces the stop).
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    except DevserveError as error:
        return report(error)  # one sentence on stderr, and the error's exit code
    except KeyboardInterrupt:  # INT or TERM during start-up: a normal stop
        return ExitCode.OK
    except SystemExit as exit:
        # argparse's --help exits; callers of main() get its code returned instead.
        return exit.code if isinstance(exit.code, int) else ExitCode.OK
