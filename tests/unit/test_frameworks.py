"""Dev-mode integration with Flask, Bottle, Falcon and Pyramid, and telling ASGI from WSGI.

(Django's needs its settings configured for the whole process: it is tested on a real
project through the CLI, in tests/integration/test_frameworks.py.)"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import bottle
import falcon
import flask
import pytest
from pyramid.config import Configurator
from werkzeug.test import Client

from devserve import frameworks
from devserve.app import check_wsgi, is_asgi
from devserve.config import Settings
from devserve.errors import NotWSGIError

DEBUGGING = Settings(dev=("reload", "werkzeug"))
RELOADING = Settings(dev=("reload",))


def failing_flask(tmp_path: Path) -> flask.Flask:
    (tmp_path / "templates").mkdir()
    (tmp_path / "static").mkdir()
    app = flask.Flask("shop", root_path=str(tmp_path))
    blueprint = flask.Blueprint("admin", "admin", template_folder=str(tmp_path / "admin"))
    app.register_blueprint(blueprint)

    @app.route("/")
    def boom() -> str:
        raise ValueError("boom")

    return app


def test_flask_exceptions_reach_the_debugger_only_when_debugging(tmp_path: Path) -> None:
    app = failing_flask(tmp_path)
    frameworks.detect(app, RELOADING).prepare()
    assert Client(app).get("/").status_code == 500  # Flask's own page
    frameworks.detect(app, DEBUGGING).prepare()
    with pytest.raises(ValueError, match="boom"):
        Client(app).get("/")


def test_flask_templates_reload_themselves(tmp_path: Path) -> None:
    app = failing_flask(tmp_path)
    integration = frameworks.detect(app, RELOADING)
    assert isinstance(integration, frameworks.Flask)
    integration.prepare()
    assert app.jinja_env.auto_reload is True
    templates, admin = str(tmp_path / "templates"), str(tmp_path / "admin")
    assert integration.watch_folders() == [templates, admin]
    assert integration.static_folders() == [str(tmp_path / "static")]
    changed = {f"{templates}/page.html", f"{admin}/list.html", f"{tmp_path}/views.py"}
    assert integration.refresh(changed, in_process=False) == {
        f"{templates}/page.html",
        f"{admin}/list.html",
    }


def test_flask_without_reload_refreshes_nothing(tmp_path: Path) -> None:
    app = failing_flask(tmp_path)
    integration = frameworks.detect(app, Settings(dev=("werkzeug",)))
    integration.prepare()
    assert integration.refresh({f"{tmp_path}/templates/page.html"}, in_process=True) == set()


def test_flask_behind_middleware_is_found(tmp_path: Path) -> None:
    from werkzeug.middleware.proxy_fix import ProxyFix

    app = failing_flask(tmp_path)
    integration = frameworks.detect(ProxyFix(app), DEBUGGING)
    assert isinstance(integration, frameworks.Flask)
    assert integration.app is app


def test_bottle_catchall_off_when_debugging() -> None:
    app = bottle.Bottle()

    @app.route("/")
    def boom() -> str:
        raise ValueError("boom")

    integration = frameworks.detect(app, DEBUGGING)
    assert isinstance(integration, frameworks.Bottle)
    integration.prepare()
    with pytest.raises(ValueError, match="boom"):
        Client(app).get("/")


def falcon_app() -> falcon.App:
    class Boom:
        def on_get(self, req: Any, resp: Any) -> None:
            raise ValueError("boom")

    app = falcon.App()
    app.add_route("/", Boom())
    return app


def test_falcon_exceptions_reach_the_debugger_when_debugging() -> None:
    app = falcon_app()
    frameworks.detect(app, RELOADING).prepare()
    assert Client(app).get("/").status_code == 500
    frameworks.detect(app, DEBUGGING).prepare()
    with pytest.raises(ValueError, match="boom"):
        Client(app).get("/")


def test_falcon_keeps_the_apps_own_handler() -> None:
    app = falcon_app()

    def handled(req: Any, resp: Any, error: Exception, params: Any) -> None:
        resp.status = falcon.HTTP_418

    app.add_error_handler(Exception, handled)
    frameworks.detect(app, DEBUGGING).prepare()
    assert Client(app).get("/").status_code == 418


def test_pyramid_is_recognised_and_propagates_already() -> None:
    def boom(request: Any) -> None:
        raise ValueError("boom")

    with Configurator() as config:
        config.add_route("home", "/")
        config.add_view(boom, route_name="home")
        app = config.make_wsgi_app()
    integration = frameworks.detect(app, DEBUGGING)
    assert isinstance(integration, frameworks.Pyramid)
    integration.prepare()
    with pytest.raises(ValueError, match="boom"):
        Client(app).get("/")


def test_a_plain_app_gets_the_plain_integration() -> None:
    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [])
        return [b""]

    integration = frameworks.detect(app, DEBUGGING)
    assert type(integration) is frameworks.Integration
    assert integration.wrap(app) is app
    assert integration.refresh({"/p/templates/x.html"}, in_process=True) == set()


def test_a_failing_django_receiver_is_logged_and_the_others_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from django.dispatch import Signal

    signal = Signal()

    def broken(sender: Any, **named: Any) -> None:
        raise RuntimeError("receiver broke")

    def fine(sender: Any, **named: Any) -> bool:
        sender.watch_file("/p/shop/extra.cfg")
        return True

    signal.connect(broken, weak=False)
    signal.connect(fine, weak=False)
    collector = frameworks._Collector()
    assert frameworks._answers(signal, sender=collector) == [True]
    assert "receiver broke" in caplog.text
    assert collector.extra_files == {"/p/shop/extra.cfg"}


# --- ASGI or WSGI, told without calling ---


async def asgi_function(scope: Any, receive: Any, send: Any) -> None:
    pass


class AsgiApp:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        pass


class Asgi3Signature:  # ASGI 3 without async (returns an awaitable)
    def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        return asgi_function(scope, receive, send)


def wsgi_function(environ: Any, start_response: Any) -> list[bytes]:
    return []


class WsgiApp:
    def __call__(self, environ: Any, start_response: Any, extra: Any = None) -> list[bytes]:
        return []


class WsgiClass:  # the class itself is the app: each call builds a response iterable
    def __init__(self, environ: Any, start_response: Any) -> None:
        pass


@pytest.mark.parametrize(
    "app",
    [asgi_function, AsgiApp(), Asgi3Signature(), functools.partial(asgi_function)],
    ids=["coroutine", "async-call", "signature", "partial"],
)
def test_asgi_apps_are_told_without_calling_them(app: Any) -> None:
    assert is_asgi(app) is True
    with pytest.raises(NotWSGIError, match=r"ASGI app .*uvicorn main:app --reload"):
        check_wsgi(app, "main:app")


@pytest.mark.parametrize(
    "app",
    [wsgi_function, WsgiApp(), WsgiClass, flask.Flask("x"), bottle.Bottle(), falcon.App(), len],
    ids=["function", "object", "class", "flask", "bottle", "falcon", "builtin"],
)
def test_wsgi_apps_are_not_asgi(app: Any) -> None:
    assert is_asgi(app) is False
    check_wsgi(app, "main:app")


def test_a_django_asgi_module_is_told_where_its_wsgi_side_is() -> None:
    with pytest.raises(NotWSGIError, match=r"devserve mysite\.wsgi:application$"):
        check_wsgi(AsgiApp(), "mysite.asgi:application")
