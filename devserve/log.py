"""Logging set-up, done once by the CLI. The only module that knows about rich.

On a terminal: rich's handler, a banner panel and a request log coloured by status. Anywhere
else (a log file, a pipe, an IDE console without a TTY): plain, greppable lines.
``NO_COLOR`` (no escape code at all) and ``FORCE_COLOR`` (rich even without a terminal) are
honoured.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import TextIO

__all__ = [
    "PLAIN_FORMAT",
    "print_banner",
    "print_table",
    "setup_embedded_logging",
    "setup_logging",
    "status_style",
    "uses_rich",
]

PLAIN_FORMAT = "%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"

_rich_console: object | None = None  # the rich Console when logging goes through rich


def status_style(status: int) -> str:
    """The colour of a response status in the request log."""
    if status >= 500:
        return "bold magenta"
    if status >= 400:
        return "yellow" if status == 404 else "bold red"
    if status == 304:
        return "cyan"
    if status >= 300:
        return "green"
    return "default"


def uses_rich(stream: TextIO, logfile: str | None) -> bool:
    if logfile:
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def setup_logging(level: str = "info", logfile: str | None = None) -> None:
    """Install one handler on the root logger (so the app's own logs show too)."""
    global _rich_console
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    handler: logging.Handler
    if uses_rich(sys.stderr, logfile):
        from rich.console import Console

        # NO_COLOR: rich drops colours but keeps bold and dim; no escape code at all then.
        plain = bool(os.environ.get("NO_COLOR"))
        _rich_console = Console(stderr=True, color_system=None if plain else "auto")
        handler = _rich_handler(_rich_console)
        handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    else:
        _rich_console = None
        if logfile:
            try:
                handler = logging.FileHandler(logfile, encoding="utf-8")
            except OSError as error:
                from devserve.errors import ConfigError

                raise ConfigError(
                    f"cannot open log file {logfile}: {error.strerror}; check --logfile"
                ) from None
        else:
            handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Werkzeug adds a handler of its own unless one up the tree handles its level.
    logging.getLogger("werkzeug").setLevel(level.upper())


def setup_embedded_logging(level: str, loggers: Sequence[str]) -> None:
    """Inside another server (gunicorn, uwsgi), whose logging is its own: when nothing
    handles the root logger, give ``loggers`` (devserve's, the addons') a plain handler on
    stderr, so their warnings and errors show; otherwise touch nothing."""
    if logging.getLogger().handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(PLAIN_FORMAT))
    for name in loggers:
        logger = logging.getLogger(name)
        if not logger.handlers:
            logger.addHandler(handler)
            logger.setLevel(level.upper())


def print_banner(title: str, rows: Sequence[tuple[str, str]]) -> None:
    """The start-up banner: a panel on a terminal, one log line per row otherwise."""
    logger = logging.getLogger("devserve")
    if _rich_console is None:
        logger.info("%s", title)
        for label, value in rows:
            logger.info("  %s: %s", label, value)
        return
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table

    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        table.add_row(label, value)
    assert isinstance(_rich_console, Console)
    _rich_console.print(Panel(table, title=title, expand=False, border_style="cyan"))


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A report: a rich table on a terminal, one aligned plain-text log record otherwise."""
    if _rich_console is not None:
        from rich.console import Console

        assert isinstance(_rich_console, Console)
        _rich_console.print(_rich_table(title, columns, rows))
        return
    logging.getLogger("devserve").info("%s", _plain_table(title, columns, rows))


def print_tables(
    tables: Sequence[tuple[str, Sequence[str], Sequence[Sequence[str]]]],
    stream: TextIO | None = None,
) -> None:
    """A command's output (``devserve status``): rich tables on a terminal, aligned plain
    text otherwise (a pipe, a file: what a script reads)."""
    stream = stream or sys.stdout
    if stream.isatty():
        from rich.console import Console

        console = Console(file=stream)
        for title, columns, rows in tables:
            console.print(_rich_table(title, columns, rows))
        return
    for title, columns, rows in tables:
        print(_plain_table(title, columns, rows), end="\n\n", file=stream)


def _rich_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> object:
    from rich.table import Table

    table = Table(title=title, show_header=any(columns), title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*row)
    return table


_FIGURE = re.compile(r"-?[\d.,]+ ?(ms|s|MiB|%)?|-|")


def _plain_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Aligned text: the columns of figures to the right, the others to the left."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(columns, *rows, strict=True)]
    figures = [
        bool(rows) and all(_FIGURE.fullmatch(str(row[index])) for row in rows)
        for index in range(len(columns))
    ]

    def line(cells: Sequence[str]) -> str:
        aligned = (
            str(cell).rjust(width) if figure else str(cell).ljust(width)
            for cell, width, figure in zip(cells, widths, figures, strict=True)
        )
        return "  ".join(aligned).rstrip()

    header = [line(columns)] if any(columns) else []
    return "\n".join([title, *header, *(line(row) for row in rows)])


def _rich_handler(console: object) -> logging.Handler:
    """rich is imported here, only when logging goes to a terminal: it costs start-up time,
    and start-up time is reload latency."""
    from rich.logging import RichHandler
    from rich.text import Text

    class StatusRichHandler(RichHandler):
        """Colours request-log records (those logged with ``extra={"status": code}``)."""

        def render_message(self, record: logging.LogRecord, message: str) -> Text:
            text = Text(message)
            status = getattr(record, "status", None)
            if isinstance(status, int):
                text.stylize(status_style(status))
            return text

    return StatusRichHandler(console=console, show_path=False)  # type: ignore[arg-type]
