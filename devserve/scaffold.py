"""``devserve scaffold NAME [DEST]``: a new addon that is served as soon as it is written.

The skeleton is a manifest, ``controllers.py`` with a page at ``/NAME``, ``static/style.css``
(which the page links) and ``tests/test_NAME.py``, which drives the addons folder through
Werkzeug's test client and passes as written. Templates use ``string.Template``
(``$name``), since the code they hold is full of braces.
"""

from __future__ import annotations

import keyword
import os
from string import Template

from devserve.errors import ConfigError, UsageError

__all__ = ["TEMPLATES", "create"]

# Relative path -> content; both are templates.
TEMPLATES: dict[str, str] = {
    "__init__.py": """\
from . import controllers  # noqa: F401  (importing registers the routes)
""",
    "__manifest__.py": """\
{
    "name": "$title",
    "version": "1.0",
    "depends": [],
    "summary": "A page at /$name that links a static file.",
}
""",
    "controllers.py": '''\
"""Routes of the $name addon. Edit PAGE while devserve runs with --dev reload."""

from devserve.http import Controller, route

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>$title</title>
  <link rel="stylesheet" href="/$name/static/style.css">
</head>
<body>
  <h1>$title</h1>
  <p>Served by the <code>$name</code> addon.</p>
</body>
</html>
"""


class $class_name(Controller):
    @route("/$name", methods=["GET"])
    def index(self) -> str:
        return PAGE
''',
    "static/style.css": """\
body {
  font-family: system-ui, sans-serif;
  margin: 2em auto;
  max-width: 40em;
}
""",
    "tests/test_$name.py": '''\
"""Tests of the $name addon: python -m pytest $name/tests"""

from pathlib import Path

from devserve.app import load_app
from devserve.config import Settings
from werkzeug.test import Client

# The addons folder holding this addon, served as devserve would serve it.
ADDONS_PATH = str(Path(__file__).resolve().parents[2])


def client() -> Client:
    return Client(load_app(Settings(addons_path=(ADDONS_PATH,))))


def test_page() -> None:
    response = client().get("/$name")
    assert response.status_code == 200
    assert "<h1>$title</h1>" in response.text


def test_static_file() -> None:
    response = client().get("/$name/static/style.css")
    assert response.status_code == 200
    assert response.mimetype == "text/css"
''',
}


def _check_name(name: str) -> None:
    if not name.isidentifier() or keyword.iskeyword(name):
        raise UsageError(
            f"{name!r} cannot name an addon: use a Python identifier (letters, digits and "
            "underscores, not starting with a digit; not a keyword), e.g. my_shop"
        )


def _values(name: str) -> dict[str, str]:
    words = [word for word in name.split("_") if word]
    return {
        "name": name,
        "title": " ".join(word.capitalize() for word in words) or name,
        "class_name": "".join(word.capitalize() for word in words) + "Controller",
    }


def create(name: str, dest: str) -> str:
    """Write the addon ``name`` into the addons folder ``dest`` (made if missing); return
    the addon's folder. An existing folder is never touched."""
    _check_name(name)
    dest = os.path.abspath(dest)
    if os.path.exists(dest) and not os.path.isdir(dest):
        raise UsageError(f"{dest} is not a folder: give DEST an addons folder")
    folder = os.path.join(dest, name)
    try:
        os.makedirs(dest, exist_ok=True)
        os.mkdir(folder)  # fails if it exists: nothing is overwritten, even in a race
    except FileExistsError:
        raise UsageError(
            f"{folder} already exists; scaffold never overwrites: choose another NAME or DEST"
        ) from None
    except OSError as error:
        raise ConfigError(f"cannot create {folder}: {error.strerror}") from None
    values = _values(name)
    for relative, template in TEMPLATES.items():
        path = os.path.join(folder, Template(relative).substitute(values))
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "x", encoding="utf-8") as file:
                file.write(Template(template).substitute(values))
        except OSError as error:
            raise ConfigError(f"cannot write {path}: {error.strerror}") from None
    return folder
