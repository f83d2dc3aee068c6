"""Dev-mode integration with the frameworks people serve: what their own dev servers do.

Applied by the CLI with any ``--dev`` option, never by :mod:`devserve.wsgi` (production).
:func:`detect` finds the framework from the loaded callable (Django from its configured
settings); the :class:`Integration` it returns does, for that framework:

* ``prepare()``: let exceptions reach devserve's debugger (``--dev werkzeug``/``pdb``), and
  make templates re-read themselves (``--dev reload``);
* ``wrap(app)``: serve what the framework's dev server serves besides the app (Django's
  static files);
* ``started()``: what the dev server says at start (Django's system checks and
  unapplied-migrations warning), after each reload too;
* ``watch_folders()`` / ``static_folders()``: folders the framework reads templates and
  translations from (watched), and serves static files from (never a reload);
* ``refresh(paths)``: re-read changed templates or translations in place, without a reload;
  returns the paths it took care of.

=========  ====================================  ==========================================
framework  exceptions to the debugger            templates
=========  ====================================  ==========================================
Django     ``DEBUG_PROPAGATE_EXCEPTIONS``        loaders reset in place (threaded, gevent)
Flask      ``PROPAGATE_EXCEPTIONS``              Jinja's ``auto_reload`` (every mode)
Bottle     ``catchall = False``                  reload
Falcon     a handler for ``Exception`` re-raises reload
Pyramid    propagate already (no exception view) reload
=========  ====================================  ==========================================
"""

from __future__ import annotations

import io
import logging
import os
import sys
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from devserve import project
from devserve.config import Settings
from devserve.values import POST_MORTEM

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["Integration", "detect", "prepare", "report_started"]

_logger = logging.getLogger(__name__)

STARTED_DELAY = 0.25  # the start-up checks run after the first request, or after this long

_WRAPPED = ("app", "application", "wsgi_app", "wrapped")  # where middleware keeps the app


class Integration:
    """No framework recognised: nothing to adjust."""

    name = ""
    app_class = ("", "")  # (module, class) of the framework's WSGI app object

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    @classmethod
    def recognises(cls, app: Any) -> Any:
        """The framework's app object, found in ``app`` (or a few layers of middleware
        around it), when the framework is imported; else None."""
        module_name, class_name = cls.app_class
        module = sys.modules.get(module_name) if module_name else None
        return _find(app, getattr(module, class_name)) if module is not None else None

    @property
    def debugging(self) -> bool:
        """Exceptions must reach devserve's debugger (in the browser or on the terminal)."""
        return bool({"werkzeug", *POST_MORTEM} & set(self.settings.dev))

    def prepare(self) -> None:
        """Adjust the framework for development, before serving."""

    def wrap(self, app: WSGIApplication) -> WSGIApplication:
        return app

    def started(self) -> None:
        """Once serving (at start and after each reload): what the framework reports."""

    @property
    def reports(self) -> bool:
        """Whether :meth:`started` does something (it may take a while)."""
        return type(self).started is not Integration.started

    def watch_folders(self) -> list[str]:
        return []

    def static_folders(self) -> list[str]:
        return []

    def static_urls(self) -> list[tuple[str, str]]:
        """The project's static folders with the URL each is served at (``/static/``):
        live reload names a changed stylesheet by its URL."""
        return []

    def refresh(self, paths: Iterable[str], in_process: bool) -> set[str]:
        """Have the framework re-read the changed ``paths`` it can (``in_process``: this
        process is the one serving); the paths it took care of need no reload."""
        return set()


def _find(app: Any, kind: type) -> Any:
    """``app``, or the app a few layers of middleware wrap, when it is a ``kind``."""
    for _ in range(4):
        if isinstance(app, kind):
            return app
        app = next((getattr(app, name) for name in _WRAPPED if hasattr(app, name)), None)
        if app is None:
            return None
    return None


def _project_pairs(pairs: Iterable[tuple[Any, str]]) -> list[tuple[str, str]]:
    """(folder, URL) pairs made absolute, leaving out those of installed packages."""
    absolute = ((os.path.abspath(os.fspath(folder)), url) for folder, url in pairs)
    return [(folder, url) for folder, url in absolute if not project.is_library(folder)]


def _project_folders(folders: Iterable[Any]) -> list[str]:
    """The folders, made absolute strings, leaving out those of installed packages."""
    absolute = (os.path.abspath(os.fspath(folder)) for folder in folders if folder)
    return [folder for folder in absolute if not project.is_library(folder)]


# --- Django ---


class _Collector:
    """What Django's ``autoreload_started`` receivers and ``file_changed`` senders expect of
    runserver's reloader: apps register the folders (``watch_dir``) and files
    (``watch_file``, ``extra_files``) they read."""

    def __init__(self) -> None:
        self.folders: list[str] = []
        self.extra_files: set[Any] = set()

    def watch_dir(self, path: Any, glob: str) -> None:
        self.folders.append(os.fspath(path))

    def watch_file(self, path: Any) -> None:
        self.extra_files.add(path)


def _answers(signal: Any, **named: Any) -> list[Any]:
    """What the receivers of a Django signal answered; one that raises is logged, and the
    others still run."""
    answers = []
    for receiver, answer in signal.send_robust(**named):
        if isinstance(answer, Exception):
            _logger.error("%r failed", receiver, exc_info=answer)
        else:
            answers.append(answer)
    return answers


class Django(Integration):
    """Django, set up by the project's ``wsgi.py``: as ``manage.py runserver`` serves it."""

    name = "django"

    @classmethod
    def recognises(cls, app: Any) -> Any:
        if "django.conf" not in sys.modules:
            return None
        from django.apps import apps
        from django.conf import settings

        return app if settings.configured and apps.ready else None

    def prepare(self) -> None:
        from django.conf import settings

        if self.debugging:
            settings.DEBUG_PROPAGATE_EXCEPTIONS = True
        _log_once_django()

    def wrap(self, app: WSGIApplication) -> WSGIApplication:
        from django.conf import settings

        if self.settings.no_static or not settings.DEBUG:
            return app
        from django.apps import apps

        if not apps.is_installed("django.contrib.staticfiles"):
            return app
        from django.contrib.staticfiles.handlers import StaticFilesHandler
        from django.core.exceptions import ImproperlyConfigured

        try:
            return StaticFilesHandler(app)  # type: ignore[no-any-return]
        except ImproperlyConfigured as error:
            _logger.warning("static files are not served: %s", error)
            return app

    def started(self) -> None:
        from django.core.management.base import BaseCommand, SystemCheckError
        from django.db import connections

        out, err = io.StringIO(), io.StringIO()
        command = BaseCommand(stdout=out, stderr=err, no_color=True)
        try:
            command.check(display_num_errors=True)
        except SystemCheckError as error:
            _logger.error("%s", str(error).strip())
        except Exception:  # a check that crashes must not take the server down
            _logger.exception("Django's system checks failed")
        for text, level in ((err.getvalue(), logging.WARNING), (out.getvalue(), logging.INFO)):
            if text.strip():
                _logger.log(level, "%s", text.strip())
        out.seek(0), out.truncate()
        try:
            command.check_migrations()
        except Exception as error:  # no database yet, or it cannot be reached
            _logger.warning("cannot check for unapplied migrations: %s", error)
        if out.getvalue().strip():
            _logger.warning("%s", " ".join(out.getvalue().split("\n")).strip())
        for connection in connections.all(initialized_only=True):
            connection.close()

    def watch_folders(self) -> list[str]:
        from django.utils.autoreload import autoreload_started

        collector = _Collector()
        _answers(autoreload_started, sender=collector)
        files = (os.path.dirname(os.fspath(path)) for path in collector.extra_files)
        return _project_folders([*collector.folders, *files])

    def static_folders(self) -> list[str]:
        from django.conf import settings

        folders = [
            entry[1] if isinstance(entry, (tuple, list)) else entry
            for entry in getattr(settings, "STATICFILES_DIRS", ())
        ]
        return _project_folders([*folders, getattr(settings, "STATIC_ROOT", None)])

    def static_urls(self) -> list[tuple[str, str]]:
        from django.apps import apps
        from django.conf import settings

        url = settings.STATIC_URL or "/static/"
        if not url.startswith(("/", "http:", "https:")):
            url = "/" + url
        pairs = [(os.path.join(c.path, "static"), url) for c in apps.get_app_configs()]
        for entry in getattr(settings, "STATICFILES_DIRS", ()):
            if isinstance(entry, (tuple, list)):  # (prefix, folder)
                pairs.append((os.fspath(entry[1]), f"{url}{entry[0].strip('/')}/"))
            else:
                pairs.append((os.fspath(entry), url))
        return _project_pairs(pairs)

    def refresh(self, paths: Iterable[str], in_process: bool) -> set[str]:
        """Django's own ``file_changed`` signal, as runserver sends it: the template loaders
        and translations are reset. Only this process: prefork workers reload instead."""
        if not in_process:
            return set()
        from pathlib import Path

        from django.utils.autoreload import file_changed

        sender = _Collector()
        return {
            path
            for path in paths
            if not path.endswith(".py")
            and any(_answers(file_changed, sender=sender, file_path=Path(path)))
        }


def _log_once_django() -> None:
    """Django's default logging prints request errors on its own console handler (with
    DEBUG on) and passes them on to devserve's: drop its handler, keep devserve's."""
    from django.utils.log import RequireDebugTrue

    logger = logging.getLogger("django")
    for handler in list(logger.handlers):
        default = isinstance(handler, logging.StreamHandler) and any(
            isinstance(item, RequireDebugTrue) for item in handler.filters
        )
        if default and logging.getLogger().handlers:
            logger.removeHandler(handler)


# --- Flask ---


class Flask(Integration):
    """A Flask app (or its factory's result): as ``flask run --debug`` serves it."""

    name = "flask"
    app_class = ("flask", "Flask")
    _templates: list[str] | None = None  # the template folders, once asked

    def prepare(self) -> None:
        if self.debugging:
            self.app.config["PROPAGATE_EXCEPTIONS"] = True
        if self.settings.reload:  # Jinja checks a template's mtime when it is used
            self.app.config["TEMPLATES_AUTO_RELOAD"] = True
            self.app.jinja_env.auto_reload = True

    def _blueprints(self) -> list[Any]:
        return [self.app, *self.app.iter_blueprints()]

    def watch_folders(self) -> list[str]:
        folders = []
        for scaffold in self._blueprints():
            loader = scaffold.jinja_loader
            folders += list(getattr(loader, "searchpath", []) if loader is not None else [])
        return _project_folders(folders)

    def static_folders(self) -> list[str]:
        return _project_folders(scaffold.static_folder for scaffold in self._blueprints())

    def static_urls(self) -> list[tuple[str, str]]:
        pairs = []
        for scaffold in self._blueprints():
            if scaffold.static_folder and scaffold.static_url_path is not None:
                prefix = getattr(scaffold, "url_prefix", None) or ""
                pairs.append((scaffold.static_folder, f"{prefix}{scaffold.static_url_path}/"))
        return _project_pairs(pairs)

    def refresh(self, paths: Iterable[str], in_process: bool) -> set[str]:
        if not self.settings.reload:
            return set()
        if self._templates is None:  # blueprints are registered before serving
            self._templates = self.watch_folders()
        return {
            path
            for path in paths
            if not path.endswith(".py") and any(project.inside(path, f) for f in self._templates)
        }


# --- Bottle, Falcon, Pyramid ---


class Bottle(Integration):
    """Bottle: ``catchall`` off, so exceptions reach the debugger."""

    name = "bottle"
    app_class = ("bottle", "Bottle")

    def prepare(self) -> None:
        if self.debugging:
            self.app.catchall = False


class Falcon(Integration):
    """Falcon: its default handler for ``Exception`` (a 500 page) gives way to one that
    raises again, so exceptions reach the debugger. A handler of the app's own stays."""

    name = "falcon"
    app_class = ("falcon", "App")

    def prepare(self) -> None:
        import falcon

        handler = getattr(self.app, "_error_handlers", {}).get(Exception)
        default = getattr(handler, "__func__", None) is falcon.App._python_error_handler
        if self.debugging and default:
            self.app.add_error_handler(Exception, _raise_again)


def _raise_again(req: Any, resp: Any, error: BaseException, params: Any) -> None:
    raise error


class Pyramid(Integration):
    """Pyramid: an exception no exception view handles reaches the debugger as it is."""

    name = "pyramid"
    app_class = ("pyramid.router", "Router")


FRAMEWORKS: tuple[type[Integration], ...] = (Django, Flask, Bottle, Falcon, Pyramid)


def detect(app: Any, settings: Settings) -> Integration:
    """The integration for the framework ``app`` is built with (or the app's factory set
    up); the plain one when none is recognised."""
    for framework in FRAMEWORKS:
        try:
            found = framework.recognises(app)
        except Exception:  # a half-configured framework: serve the app as it is
            _logger.debug("recognising %s failed", framework.name, exc_info=True)
            continue
        if found is not None:
            return framework(found, settings)
    return Integration(app, settings)


def prepare(
    settings: Settings, imported: Any, application: WSGIApplication, broken: bool
) -> tuple[Integration, WSGIApplication]:
    """The framework integration of the app ``imported`` (in --dev modes only), and the
    app it prepared for development and wrapped (Django's static files)."""
    if not settings.dev or broken:
        return Integration(imported, settings), application
    integration = detect(imported, settings)
    try:
        integration.prepare()
        return integration, integration.wrap(application)
    except Exception:  # the app serves as it is
        _logger.exception("adjusting %s for development failed", integration.name)
        return integration, application


def report_started(integration: Integration, served_first: Any, in_thread: bool) -> None:
    """What the framework reports once serving (Django's system checks). In a thread, once
    the first request was answered (or 250 ms passed), so it never delays serving; not in
    prefork's master: there at once, before any worker is forked (a fork must not copy a
    thread that is half-way through an import)."""

    def report() -> None:
        if in_thread:
            served_first.wait(STARTED_DELAY)
        try:
            integration.started()
        except Exception:
            _logger.exception("%s's start-up checks failed", integration.name)

    if not integration.reports:
        return
    if in_thread:
        threading.Thread(target=report, name="devserve.frameworks", daemon=True).start()
    else:
        report()
