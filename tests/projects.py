"""Real framework projects, built the way their tutorials build them, for the integration tests
and ``benchmarks/frameworks.py``.

* :func:`django_project`: ``django-admin startproject mysite`` and ``manage.py startapp shop``
  (the app beside the settings package, as Django's tutorial lays it out), with views, an
  API view of Django REST framework (``/api``), an app template extending a project-level
  one, the admin, and a package ``extras`` imported
  only when a request asks for it;
* :func:`flask_project`: a factory package, ``flaskr`` (as Flask's tutorial), with a
  blueprint, Jinja templates and a static folder;
* :func:`bottle_project`, :func:`falcon_project`, :func:`pyramid_project`: one module each.

Every app answers ``/version`` with the ``VERSION`` of its views module (:func:`set_version`
rewrites it), ``/page`` with a template (:func:`set_template`), ``/boom`` with a ValueError.
The Django and Flask pages load a stylesheet (:data:`SITE_CSS`: Django's
``shop/static/shop/site.css``, Flask's ``flaskr/static/style.css``) and show ``VERSION`` in
``<p id="version">``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

SITE_CSS = "p { color: rgb(0, 0, 0); }\n"  # the projects' stylesheet

DJANGO_VIEWS = """\
from django.http import HttpResponse
from django.shortcuts import render
from rest_framework.decorators import api_view
from rest_framework.response import Response

VERSION = "v0"


def version(request):
    return HttpResponse(VERSION)


def page(request):
    return render(request, "shop/page.html", {"version": VERSION})


def boom(request):
    raise ValueError("boom from shop")


@api_view(["GET"])
def api(request):
    return Response({"version": VERSION})


def lazy(request):
    from extras import helpers  # imported by the first request that comes here

    return HttpResponse(helpers.VALUE)
"""

DJANGO_URLS = """\
from django.contrib import admin
from django.urls import path

from shop import views

urlpatterns = [
    path("admin/", admin.site.urls),
    path("version", views.version),
    path("page", views.page),
    path("boom", views.boom),
    path("lazy", views.lazy),
    path("api", views.api),
]
"""


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def django_project(dest: Path) -> Path:
    """A Django project in ``dest`` (created): ``mysite/`` and ``shop/`` side by side."""
    dest.mkdir(parents=True, exist_ok=True)
    run = {"check": True, "capture_output": True, "timeout": 60}
    subprocess.run([sys.executable, "-m", "django", "startproject", "mysite", str(dest)], **run)
    subprocess.run([sys.executable, "manage.py", "startapp", "shop"], cwd=dest, **run)
    settings = dest / "mysite" / "settings.py"
    text = settings.read_text(encoding="utf-8")
    text = text.replace(
        "'django.contrib.staticfiles',",
        "'django.contrib.staticfiles',\n    'rest_framework',\n    'shop',",
    )
    text = text.replace("'DIRS': [],", "'DIRS': [BASE_DIR / 'templates'],")
    assert "'shop'," in text and "BASE_DIR / 'templates'" in text, "startproject changed"
    settings.write_text(text, encoding="utf-8")
    _write(dest / "shop" / "views.py", DJANGO_VIEWS)
    _write(dest / "mysite" / "urls.py", DJANGO_URLS)
    _write(
        dest / "templates" / "base.html",
        "{% load static %}<html><head>"
        '<link rel="stylesheet" href="{% static \'shop/site.css\' %}"></head>'
        '<body>{% block body %}{% endblock %}<p id="version">{{ version }}</p></body></html>\n',
    )
    set_template(dest / "shop" / "templates" / "shop" / "page.html", "page v0")
    _write(dest / "shop" / "static" / "shop" / "site.css", SITE_CSS)
    _write(dest / "extras" / "__init__.py", "")
    _write(dest / "extras" / "helpers.py", 'VALUE = "extras v0"\n')
    return dest


FLASK_INIT = """\
from flask import Flask


def create_app():
    app = Flask(__name__)
    from . import views

    app.register_blueprint(views.bp)
    return app
"""

FLASK_VIEWS = """\
from flask import Blueprint, render_template

VERSION = "v0"

bp = Blueprint("shop", __name__)


@bp.route("/version")
def version():
    return VERSION


@bp.route("/page")
def page():
    return render_template("page.html", version=VERSION)


@bp.route("/boom")
def boom():
    raise ValueError("boom from flaskr")
"""


def flask_project(dest: Path) -> Path:
    """A Flask factory package ``flaskr`` in ``dest``: serve ``flaskr:create_app()``."""
    package = dest / "flaskr"
    _write(package / "__init__.py", FLASK_INIT)
    _write(package / "views.py", FLASK_VIEWS)
    _write(
        package / "templates" / "base.html",
        '<html><head><link rel="stylesheet" '
        "href=\"{{ url_for('static', filename='style.css') }}\"></head>"
        '<body>{% block body %}{% endblock %}<p id="version">{{ version }}</p></body></html>\n',
    )
    set_template(package / "templates" / "page.html", "page v0")
    _write(package / "static" / "style.css", SITE_CSS)
    return dest


BOTTLE_APP = """\
import bottle

VERSION = "v0"

app = bottle.Bottle()


@app.route("/version")
def version():
    return VERSION


@app.route("/boom")
def boom():
    raise ValueError("boom from bottle")
"""

FALCON_APP = """\
import falcon

VERSION = "v0"


class Version:
    def on_get(self, req, resp):
        resp.content_type = falcon.MEDIA_TEXT
        resp.text = VERSION


class Boom:
    def on_get(self, req, resp):
        raise ValueError("boom from falcon")


app = falcon.App()
app.add_route("/version", Version())
app.add_route("/boom", Boom())
"""

PYRAMID_APP = """\
from pyramid.config import Configurator
from pyramid.response import Response

VERSION = "v0"


def version(request):
    return Response(VERSION, content_type="text/plain")


def boom(request):
    raise ValueError("boom from pyramid")


with Configurator() as config:
    config.add_route("version", "/version")
    config.add_view(version, route_name="version")
    config.add_route("boom", "/boom")
    config.add_view(boom, route_name="boom")
    app = config.make_wsgi_app()
"""

ONE_MODULE_APPS = {"bottle": BOTTLE_APP, "falcon": FALCON_APP, "pyramid": PYRAMID_APP}


def one_module_project(dest: Path, framework: str) -> Path:
    """``<framework>app.py`` in ``dest``: serve ``<framework>app:app``."""
    return _write(dest / f"{framework}app.py", ONE_MODULE_APPS[framework])


VERSION_LINE = re.compile(r'^VERSION = ".*?"(?:  # (\.*))?$', re.MULTILINE)


def set_version(path: Path, version: str) -> None:
    """Rewrite the ``VERSION = "..."`` line of a views module, in place as editors save.
    Each edit also grows the file by a byte, as real edits change its size: Python trusts
    a cached ``.pyc`` whose recorded size and mtime (whole seconds) match, which would let a
    server that imports it again within the second run the previous version."""
    text = path.read_text(encoding="utf-8")
    match = VERSION_LINE.search(text)
    assert match is not None, f"no VERSION line in {path}"
    grown = (match.group(1) or "") + "."
    line = f'VERSION = "{version}"  # {grown}'
    path.write_text(text[: match.start()] + line + text[match.end() :], encoding="utf-8")


def set_template(path: Path, content: str) -> None:
    """A template extending ``base.html`` whose body is ``content`` (the same text for a
    Django template and a Jinja one)."""
    _write(path, f'{{% extends "base.html" %}}{{% block body %}}{content}{{% endblock %}}\n')
