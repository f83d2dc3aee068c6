"""What is served: the settings' target turned into a WSGI callable.

``--app module:attribute`` (or ``module:factory()``) imports that callable with the current
directory on ``sys.path``; an addons path becomes :class:`devserve.http.Root` over its addons.
"""

from __future__ import annotations

import ast
import importlib
import os
import sys
from typing import TYPE_CHECKING, Any

from devserve.config import Settings
from devserve.errors import AppLoadError, ConfigError, exception_summary

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["check_target", "describe_target", "import_app", "load_app", "watch_roots"]


def check_target(settings: Settings) -> None:
    if not (settings.app or settings.addons_path):
        raise ConfigError(
            "nothing to serve: give an addons folder or a module:attribute WSGI app "
            "(for example: devserve examples/addons)"
        )


def _current_folder_importable() -> str:
    """Put the current folder first on ``sys.path`` (as ``python -m`` does); return it."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    return cwd


def load_app(settings: Settings) -> WSGIApplication:
    """The WSGI callable the settings name. Raises ConfigError or AppLoadError."""
    check_target(settings)
    if settings.app:
        return import_app(settings.app)
    if settings.addons_path:
        # Imported here: a plain WSGI app starts (and reloads) without the addons machinery.
        from devserve import addons, http

        found = addons.discover(settings.addons_path)
        addons.import_addons(found, settings.addons_path)
        return http.Root(found)
    raise AssertionError("unreachable: check_target() passed")  # pragma: no cover


def watch_roots(settings: Settings, given: object = None) -> list[str]:
    """The folders --dev reload watches: the addons paths, or the folder of the app's
    top-level package (the module's own folder for a lone module), plus --reload-path. For
    an app object handed to ``devserve.run()``: the folder of the script that runs."""
    import importlib.util

    roots = list(settings.addons_path)
    if given is not None:
        script = getattr(sys.modules.get("__main__"), "__file__", None)
        roots.append(os.path.dirname(os.path.abspath(script)) if script else os.getcwd())
    if settings.app:
        top_level = settings.app.partition(":")[0].split(".")[0]
        cwd = _current_folder_importable()
        try:
            spec = importlib.util.find_spec(top_level)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            roots.extend(spec.submodule_search_locations)
        elif spec is not None and spec.origin and os.path.isfile(spec.origin):
            roots.append(os.path.dirname(spec.origin))
        else:
            roots.append(cwd)
    roots.extend(settings.reload_path)
    return list(dict.fromkeys(roots))


def describe_target(settings: Settings, given: object = None) -> str:
    if given is not None:
        name = getattr(given, "__qualname__", type(given).__qualname__)
        return f"{getattr(given, '__module__', '?')}:{name}"
    if settings.app:
        return settings.app
    return "addons in " + ", ".join(settings.addons_path)


def _parse_spec(spec: str) -> tuple[str, str, tuple[Any, ...] | None]:
    """``pkg.mod:name`` or ``pkg.mod:factory(literal, ...)`` -> (module, name, call args)."""
    module, _, expression = spec.partition(":")
    problem = f"{spec!r} is not module:attribute or module:factory()"
    if not module or not expression:
        raise ConfigError(f"{problem}; for example mypkg.wsgi:app")
    try:
        node = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        raise ConfigError(f"{problem}; for example mypkg.wsgi:create_app()") from None
    if isinstance(node, ast.Name):
        return module, node.id, None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        try:
            return module, node.func.id, tuple(ast.literal_eval(arg) for arg in node.args)
        except ValueError:
            raise ConfigError(f"{problem}: factory arguments must be literals") from None
    raise ConfigError(f"{problem}; for example mypkg.wsgi:create_app()")


def import_app(spec: str) -> WSGIApplication:
    module_name, name, call_args = _parse_spec(spec)
    cwd = _current_folder_importable()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name + ".").startswith(error.name + "."):
            raise AppLoadError(
                f"cannot import {module_name!r}: no module named {error.name!r} in {cwd} or "
                "on sys.path; check the spelling, or start devserve from the project folder"
            ) from error
        raise AppLoadError(f"importing {module_name!r} failed: {exception_summary(error)}") from (
            error
        )
    except Exception as error:
        raise AppLoadError(f"importing {module_name!r} failed: {exception_summary(error)}") from (
            error
        )
    try:
        app = getattr(module, name)
    except AttributeError:
        raise AppLoadError(
            f"module {module_name!r} has no attribute {name!r}; check the name after the colon"
        ) from None
    if call_args is not None:
        try:
            app = app(*call_args)
        except Exception as error:
            raise AppLoadError(f"calling {spec!r} failed: {exception_summary(error)}") from error
    if not callable(app):
        raise AppLoadError(f"{spec!r} is a {type(app).__name__}, not a WSGI callable")
    return app  # type: ignore[no-any-return]
