"""Every setting, declared once.

Each field of :class:`Settings` carries an :class:`Option` in its metadata: flags, help text,
the parser that turns a string into the value, and whether ``--save`` writes it. From that one
declaration come the argparse options (:func:`add_arguments`), the config file reading
(:func:`read_config_file`), the ``DEVSERVE_<NAME>`` environment variables (:func:`read_env`),
``--save`` (:func:`save_config_file`) and the settings reference in the README
(:func:`reference_table`).

Precedence, lowest first: default < config file < environment < command line (:func:`resolve`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Iterable, Mapping
from typing import Any

from devserve.errors import ConfigError
from devserve.values import (  # the settings' value parsers
    DEV_MODES,
    LOG_LEVELS,
    Parser,
    format_value,
    parse_addons_path,
    parse_bool,
    parse_dev,
    parse_existing_paths,
    parse_list,
    parse_log_level,
    parse_mebibytes,
    parse_non_negative_int,
    parse_path,
    parse_port,
    parse_positive_int,
    parse_reload_backend,
    parse_reload_mode,
    parse_seconds,
    parse_seconds_or_inherit,
    parse_str,
)

__all__ = [
    "DEV_MODES",
    "ENV_PREFIX",
    "Option",
    "Settings",
    "add_arguments",
    "default_config_path",
    "options",
    "read_config_file",
    "read_env",
    "reference_table",
    "resolve",
    "save_config_file",
]

ENV_PREFIX = "DEVSERVE_"
CONFIG_SECTION = "options"
DEFAULT_CONFIG_NAME = ".devserverc"

# --- declarations ---


@dataclasses.dataclass(frozen=True)
class Option:
    """How one setting is spelled everywhere."""

    flags: tuple[str, ...]
    help: str
    parse: Parser = parse_str
    metavar: str | None = None
    flag: bool = False  # a switch: given on the command line without a value
    saved: bool = True  # written by --save
    in_file: bool = True  # read from the config file
    const: Any = None  # the value of the option given without one (its value is optional)


def setting(default: Any, *flags: str, help: str, **option: Any) -> Any:
    return dataclasses.field(
        default=default, metadata={"option": Option(tuple(flags), help, **option)}
    )


@dataclasses.dataclass(frozen=True)
class Settings:
    """The resolved settings of one devserve run. Immutable; passed around, never global."""

    config: str | None = setting(
        None,
        "-c",
        "--config",
        help=f"INI config file, section [{CONFIG_SECTION}] (default: ~/{DEFAULT_CONFIG_NAME} "
        "when it exists)",
        parse=parse_path,
        metavar="FILE",
        saved=False,
        in_file=False,
    )
    save: bool = setting(
        False,
        "--save",
        help="write the resolved settings to the config file (mode 600; never --dev or the "
        "debugger's PIN and remote switch)",
        parse=parse_bool,
        flag=True,
        saved=False,
        in_file=False,
    )
    addons_path: tuple[str, ...] = setting(
        (),
        "--addons-path",
        help="comma-separated folders of addons to serve (a positional directory is added)",
        parse=parse_addons_path,
        metavar="DIRS",
    )
    app: str | None = setting(
        None,
        "--app",
        help="a WSGI callable to serve, as module:attribute or module:factory() "
        "(also taken from a positional argument)",
        metavar="MODULE:ATTR",
    )
    http_interface: str = setting(
        "127.0.0.1",
        "--http-interface",
        help="address to listen on (0.0.0.0 or :: to accept connections from the network)",
        metavar="ADDRESS",
    )
    http_port: int = setting(
        8069,
        "-p",
        "--http-port",
        help="port to listen on (0 picks a free port)",
        parse=parse_port,
        metavar="PORT",
    )
    proxy_mode: bool = setting(
        False,
        "--proxy-mode",
        help="behind a reverse proxy: take the client's address, scheme and host from "
        "X-Forwarded-For/-Proto/-Host, for requests that carry X-Forwarded-Host",
        parse=parse_bool,
        flag=True,
    )
    dev: tuple[str, ...] = setting(
        (),
        "--dev",
        help="comma-separated developer features: reload, werkzeug, pdb (or ipdb, pudb: "
        "post-mortem on the terminal); all = every one that needs no terminal",
        parse=parse_dev,
        metavar="FEATURES",
        saved=False,
    )
    max_http_threads: int | None = setting(
        None,
        "--max-http-threads",
        help="cap on concurrent request threads; extra connections wait in the listen backlog "
        "(default: no cap)",
        parse=parse_positive_int,
        metavar="N",
    )
    workers: int = setting(
        0,
        "--workers",
        help="prefork mode: a master and this many worker processes (0: threaded mode)",
        parse=parse_non_negative_int,
        metavar="N",
    )
    gevent_port: int | None = setting(
        None,
        "--gevent-port",
        help="prefork: an evented child process (gevent) also serves the app on this port, "
        "for long-polling (default when given without a port: 8072)",
        parse=parse_port,
        metavar="PORT",
        const=8072,
    )
    limit_request: int = setting(
        65536,
        "--limit-request",
        help="prefork: a worker is replaced after serving this many requests (0: no limit)",
        parse=parse_non_negative_int,
        metavar="N",
    )
    limit_memory_soft: int = setting(
        2048,
        "--limit-memory-soft",
        help="MiB of resident memory above which a worker is replaced after its request "
        "(threaded mode: a reload once requests finish); 0: no limit",
        parse=parse_mebibytes,
        metavar="MIB",
    )
    limit_memory_hard: int = setting(
        2560,
        "--limit-memory-hard",
        help="MiB of address space (RLIMIT_AS) a worker, or the threaded server, may reserve: "
        "an allocation beyond it fails in the process; 0: no limit",
        parse=parse_mebibytes,
        metavar="MIB",
    )
    limit_request_body: int = setting(
        128,
        "--limit-request-body",
        help="MiB a request body may have: a bigger one gets 413 before the app sees it",
        parse=parse_mebibytes,
        metavar="MIB",
    )
    limit_time_cpu: float = setting(
        60.0,
        "--limit-time-cpu",
        help="prefork: CPU seconds a request may use before its worker is killed "
        "(RLIMIT_CPU); 0: no limit",
        parse=parse_seconds,
        metavar="SECONDS",
    )
    limit_time_real: float = setting(
        120.0,
        "--limit-time-real",
        help="seconds a request may run: then its stack is logged and its worker killed "
        "(threaded mode: a reload once other requests finish); 0: no limit",
        parse=parse_seconds,
        metavar="SECONDS",
    )
    max_cron_threads: int = setting(
        2,
        "--max-cron-threads",
        help="threads (with --workers: cron worker processes) that run the served addons' "
        "@cron jobs (0: no cron)",
        parse=parse_non_negative_int,
        metavar="N",
    )
    limit_time_real_cron: float = setting(
        -1.0,
        "--limit-time-real-cron",
        help="seconds a @cron job may run before its stack is logged (the job goes on); "
        "-1: the value of --limit-time-real, 0: no limit",
        parse=parse_seconds_or_inherit,
        metavar="SECONDS",
    )
    shutdown_grace: float = setting(
        5.0,
        "--shutdown-grace",
        help="seconds that running requests get to finish on INT/TERM before devserve exits",
        parse=parse_seconds,
        metavar="SECONDS",
    )
    reload_backend: str = setting(
        "auto",
        "--reload-backend",
        help="how --dev reload watches files: auto (inotify, else watchdog, else polling; "
        "polling for network and virtual filesystems), inotify, watchdog or poll",
        parse=parse_reload_backend,
        metavar="BACKEND",
    )
    reload_mode: str = setting(
        "warm",
        "--reload-mode",
        help="how --dev reload runs new code: warm (fork it from a parent process that keeps "
        "the framework and libraries imported; threaded mode) or exec (a fresh image of the "
        "process)",
        parse=parse_reload_mode,
        metavar="MODE",
    )
    reload_path: tuple[str, ...] = setting(
        (),
        "--reload-path",
        help="comma-separated extra folders or files to watch with --dev reload",
        parse=parse_existing_paths,
        metavar="PATHS",
    )
    reload_include: tuple[str, ...] = setting(
        (),
        "--reload-include",
        help="comma-separated globs of more files whose change counts, on top of Python "
        "files, templates, translations (*.mo) and config files (a glob without / matches "
        "names, one with / the path under a watched folder)",
        parse=parse_list,
        metavar="GLOBS",
    )
    reload_exclude: tuple[str, ...] = setting(
        (),
        "--reload-exclude",
        help="comma-separated globs of files and folders never to watch, on top of the "
        "default ignores (VCS folders, virtualenvs, caches, editor temp files, logs)",
        parse=parse_list,
        metavar="GLOBS",
    )
    reload_grace: float = setting(
        5.0,
        "--reload-grace",
        help="seconds that running requests get to finish before a reload goes ahead",
        parse=parse_seconds,
        metavar="SECONDS",
    )
    no_static: bool = setting(
        False,
        "--no-static",
        help="--dev: do not serve the framework's static files as its dev server does "
        "(Django's staticfiles with DEBUG on)",
        parse=parse_bool,
        flag=True,
    )
    no_live_reload: bool = setting(
        False,
        "--no-live-reload",
        help="--dev reload: leave the browser alone (by default HTML pages load a script that "
        "reloads them when the code changes, swaps changed stylesheets and shows a syntax "
        "error over the page)",
        parse=parse_bool,
        flag=True,
    )
    status: bool = setting(
        False,
        "--status",
        help="answer GET /__devserve__/status (JSON: what runs, reloads, requests in flight, "
        "workers, caches) to clients on this machine; on with any --dev",
        parse=parse_bool,
        flag=True,
    )
    debugger_pin: str | None = setting(
        None,
        "--debugger-pin",
        help="--dev werkzeug: a fixed PIN for the debugger console, or off (default: a PIN "
        "derived from this machine, shown in the banner)",
        metavar="PIN",
        saved=False,
    )
    debugger_trusted_host: tuple[str, ...] = setting(
        (),
        "--debugger-trusted-host",
        help="--dev werkzeug: comma-separated host names the debugger also answers to "
        "(a custom dev hostname, a LAN address), besides localhost and the bound interface",
        parse=parse_list,
        metavar="HOSTS",
    )
    debugger_allow_remote: bool = setting(
        False,
        "--debugger-allow-remote",
        help="--dev werkzeug: start even on a non-loopback --http-interface (the debugger "
        "console runs any code for whoever reaches it)",
        parse=parse_bool,
        flag=True,
        saved=False,
    )
    pidfile: str | None = setting(
        None,
        "--pidfile",
        help="write the server's PID to this file; removed at exit",
        parse=parse_path,
        metavar="FILE",
    )
    log_level: str = setting(
        "info",
        "--log-level",
        help=f"log level: {', '.join(LOG_LEVELS)}",
        parse=parse_log_level,
        metavar="LEVEL",
    )
    logfile: str | None = setting(
        None,
        "--logfile",
        help="write the log to this file instead of the terminal",
        parse=parse_path,
        metavar="FILE",
    )
    stop_after_init: bool = setting(
        False,
        "--stop-after-init",
        help="load the app and every addon (so import errors show), then exit without serving",
        parse=parse_bool,
        flag=True,
        saved=False,
    )

    @property
    def reload(self) -> bool:
        return "reload" in self.dev

    @property
    def live_reload(self) -> bool:
        return self.reload and not self.no_live_reload

    @property
    def serves_status(self) -> bool:
        return self.status or bool(self.dev)


def options() -> list[tuple[dataclasses.Field[Any], Option]]:
    """Every declared setting with its option, in declaration order."""
    return [(field, field.metadata["option"]) for field in dataclasses.fields(Settings)]


def env_var(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _parse(name: str, text: str, source: str) -> Any:
    option = next(option for field, option in options() if field.name == name)
    try:
        return option.parse(text)
    except ValueError as error:
        raise ConfigError(f"invalid value for {name} in {source}: {error}") from None


# --- the four sources ---


class _ParserType:
    """Adapts a value parser to argparse, which reports ArgumentTypeError messages verbatim."""

    def __init__(self, parse: Parser) -> None:
        self.parse = parse
        self.__name__ = parse.__name__

    def __call__(self, text: str) -> Any:
        try:
            return self.parse(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one option per setting. Options not given stay absent from the namespace, so the
    lower layers (file, environment) show through."""
    group = parser.add_argument_group("settings")
    for field, option in options():
        kwargs: dict[str, Any] = {"dest": field.name, "default": argparse.SUPPRESS}
        help_text = option.help
        if option.in_file or field.name == "config":
            help_text += f" [env {env_var(field.name)}]"
        if option.flag:
            group.add_argument(*option.flags, action="store_true", help=help_text, **kwargs)
        else:
            if option.const is not None:
                kwargs.update(nargs="?", const=option.const)
            group.add_argument(
                *option.flags,
                type=_ParserType(option.parse),
                metavar=option.metavar,
                help=help_text,
                **kwargs,
            )


def read_env(environ: Mapping[str, str]) -> dict[str, Any]:
    values = {}
    for field, option in options():
        if not option.in_file:
            continue
        name = env_var(field.name)
        if name in environ:
            values[field.name] = _parse(field.name, environ[name], f"environment variable {name}")
    return values


def read_config_file(path: str) -> dict[str, Any]:
    """The ``[options]`` section of an INI file. Unknown keys are ignored with a warning
    (kept for forward compatibility); the literal ``None`` means "not set"."""
    import configparser  # here: most starts (and every reload) read no file
    import logging

    parser = configparser.ConfigParser(interpolation=None)
    try:
        with open(path, encoding="utf-8") as file:
            parser.read_file(file)
    except OSError as error:
        raise ConfigError(
            f"cannot read config file {path}: {error.strerror}; check the path given to -c/--config"
        ) from None
    except (configparser.Error, UnicodeDecodeError) as error:
        first_line = str(error).splitlines()[0]
        raise ConfigError(
            f"config file {path} is not a valid INI file ({first_line}); fix it or remove it"
        ) from None
    if not parser.has_section(CONFIG_SECTION):
        return {}
    known = {field.name: option for field, option in options() if option.in_file}
    values: dict[str, Any] = {}
    for key, text in parser.items(CONFIG_SECTION):
        if key not in known:
            logging.getLogger("devserve.config").warning(
                "unknown setting %r in %s ignored", key, path
            )
            continue
        if text.strip() != "None":
            values[key] = _parse(key, text, f"config file {path}")
    return values


def save_config_file(settings: Settings, path: str) -> None:
    """Write every saved setting that has a value, sorted, to a file only its owner can read."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.add_section(CONFIG_SECTION)
    for field, option in sorted(options(), key=lambda item: item[0].name):
        value = getattr(settings, field.name)
        if option.saved and value is not None:
            parser.set(CONFIG_SECTION, field.name, format_value(value))
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.chmod(path, 0o600)  # O_CREAT's mode does not apply to an existing file
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            parser.write(file)
    except OSError as error:
        raise ConfigError(f"cannot write config file {path}: {error.strerror}") from None


def default_config_path(environ: Mapping[str, str]) -> str:
    home = environ.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, DEFAULT_CONFIG_NAME)


def resolve(
    command_line: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Layer the sources: default < config file < environment < command line."""
    environ = os.environ if environ is None else environ
    from_env = read_env(environ)
    explicit = command_line.get("config") or (
        parse_path(environ[env_var("config")]) if env_var("config") in environ else None
    )
    config_path = explicit or default_config_path(environ)
    values: dict[str, Any] = {}
    if explicit or os.path.isfile(config_path):
        # An unreadable file named explicitly is an error, except with --save (it creates it).
        if os.path.exists(config_path) or not command_line.get("save"):
            values.update(read_config_file(config_path))
        values["config"] = config_path
    values.update(from_env)
    values.update(command_line)
    if command_line.get("save"):
        values["config"] = config_path
    return Settings(**values)


def reference_table() -> str:
    """The settings reference in Markdown, as the README shows it."""
    rows = [
        "| option | env / config key | default | description |",
        "|---|---|---|---|",
    ]
    for field, option in options():
        flags = ", ".join(f"`{flag}`" for flag in option.flags)
        if option.metavar:
            flags += f" `{option.metavar}`"
        if option.in_file:
            key = f"`{env_var(field.name)}` / `{field.name}`"
        elif field.name == "config":
            key = f"`{env_var(field.name)}`"
        else:
            key = "command line only"
        default = "" if field.default in (None, ()) else f"`{format_value(field.default)}`"
        rows.append(f"| {flags} | {key} | {default} | {option.help} |")
    return "\n".join(rows)


def from_keywords(keywords: Mapping[str, Any]) -> dict[str, Any]:
    """Settings given as Python keywords (``devserve.run(app, http_port=0, dev="reload")``):
    same names as the declarations; strings and lists go through the same parsers as the
    command line, other values are taken as they are."""
    known = {field.name: option for field, option in options()}
    values: dict[str, Any] = {}
    for name, value in keywords.items():
        if name not in known:
            raise ConfigError(f"unknown setting {name!r}; settings are: {', '.join(sorted(known))}")
        if isinstance(value, (list, tuple)):
            value = ",".join(str(item) for item in value)
        if isinstance(value, str):
            value = _parse(name, value, "devserve.run()")
        values[name] = value
    return values


def merge_target(values: dict[str, Any], targets: Iterable[str]) -> dict[str, Any]:
    """Fold positional targets into the settings: directories join the addons path, a
    ``module:attribute`` becomes the app."""
    values = dict(values)
    for target in targets:
        if ":" in target and not os.path.isdir(target):
            if "app" in values:
                raise ConfigError(
                    f"two apps given ({values['app']!r} and {target!r}); serve one at a time"
                )
            values["app"] = target
        else:
            try:
                paths = parse_addons_path(target)
            except ValueError as error:
                raise ConfigError(
                    f"{error}; give an existing addons folder or a module:attribute app"
                ) from None
            values["addons_path"] = tuple(values.get("addons_path", ())) + paths
    return values
