"""Real framework projects served as their own dev servers serve them: a stock Django project
with an app beside its settings package, a Flask factory package with templates, Bottle,
Falcon and Pyramid apps; and ASGI apps refused."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import pytest

from devserve.errors import ExitCode
from tests import projects
from tests.integration.conftest import StartDevserve
from tests.integration.harness import (
    DevserveProcess,
    assert_one_line_error,
    count_reloads,
    happens_within,
    run_cli,
    wait_reloads,
    wait_until,
    wait_watching,
    write_file,
)

HTML = {"Accept": "text/html"}
DEBUGGER_PAGE = ("EVALEX = true", 'class="traceback"')  # Werkzeug's traceback page
MODES = {"threaded": (), "prefork": ("--workers", "2"), "gevent": ("gevent",)}


def assert_debugger_page(server: DevserveProcess, path: str, message: str) -> None:
    """``path`` raises: a browser gets Werkzeug's traceback page, with the message."""
    page = server.request(path, headers=HTML)
    assert page.status == 500
    assert all(marker in page.text for marker in DEBUGGER_PAGE), page.text[:1000]
    assert message in page.text


# Every test here runs with both ways of reloading (conftest's reload_mode): a Django or
# Flask project reloads warm by default, and by exec when asked.
pytestmark = pytest.mark.usefixtures("reload_mode")


def serves(server: DevserveProcess, path: str, text: str, timeout: float = 15.0) -> None:
    """Until ``path`` answers 200 with ``text`` in its body."""

    def answered() -> bool:
        response = server.request(path)
        return response.status == 200 and text in response.text

    wait_until(answered, timeout, f"{path} to serve {text!r}")


# --- Django ---


@pytest.fixture(scope="module")
def django_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return projects.django_project(tmp_path_factory.mktemp("django") / "site")


@pytest.fixture
def site(django_template: Path, tmp_path: Path) -> Path:
    """A fresh copy of the Django project for each test."""
    return Path(shutil.copytree(django_template, tmp_path / "site"))


def start_django(devserve: StartDevserve, site: Path, *options: str) -> DevserveProcess:
    command = [o for o in options if o == "gevent"]
    rest = [o for o in options if o != "gevent"]
    return devserve(*command, "-p", "0", *rest, "mysite.wsgi:application", cwd=site)


def test_django_edits_of_the_app_beside_the_settings_package_are_served(
    devserve: StartDevserve, site: Path
) -> None:
    server = start_django(devserve, site, "--dev", "reload,werkzeug")
    wait_watching(server)
    assert re.search(r"watching mysite, shop, templates with inotify \(ready in", server.log)
    for number in range(1, 4):
        projects.set_version(site / "shop" / "views.py", f"v{number}")
        serves(server, "/version", f"v{number}")
    wait_reloads(server, 3)


def test_django_template_edits_are_served_without_a_reload(
    devserve: StartDevserve, site: Path
) -> None:
    server = start_django(devserve, site, "--dev", "reload")
    wait_watching(server)
    serves(server, "/page", "page v0")
    projects.set_template(site / "shop" / "templates" / "shop" / "page.html", "page v1")
    serves(server, "/page", "page v1")
    write_file(site / "templates" / "base.html", "<p>{% block body %}{% endblock %} base v1</p>")
    serves(server, "/page", "page v1 base v1")
    server.wait_for_log(r"templates/base\.html: re-read by django, no reload needed")
    assert count_reloads(server) == 0


def test_django_translations_are_reset_in_place(devserve: StartDevserve, site: Path) -> None:
    catalog = site / "shop" / "locale" / "fr" / "LC_MESSAGES" / "django.mo"
    catalog.parent.mkdir(parents=True)
    catalog.write_bytes(b"")
    server = start_django(devserve, site, "--dev", "reload")
    wait_watching(server)
    catalog.write_bytes(b"compiled again")
    server.wait_for_log(r"shop/locale/fr/LC_MESSAGES/django\.mo: re-read by django, no reload")
    assert count_reloads(server) == 0


def test_django_admin_static_files_are_served_as_runserver_serves_them(
    devserve: StartDevserve, site: Path
) -> None:
    server = start_django(devserve, site, "--dev", "reload")
    css = server.request("/static/admin/css/base.css")
    assert css.status == 200, css.text[:500]
    assert css.headers["Content-Type"].startswith("text/css")
    assert b"font-family" in css.body
    server.stop()
    without = start_django(devserve, site, "--dev", "reload", "--no-static")
    assert without.request("/static/admin/css/base.css").status == 404


STYLED = """
const sheets = [...document.styleSheets];
const header = document.querySelector("#header");
return {
    sheets: sheets.length,
    loaded: sheets.every(sheet => sheet.cssRules.length > 0),
    background: header ? getComputedStyle(header).backgroundColor : null,
};
"""


def test_django_admin_is_styled_and_errors_debugged_in_a_browser(
    devserve: StartDevserve, site: Path, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    server = start_django(devserve, site, "--dev", "reload,werkzeug")
    browser.get(f"http://127.0.0.1:{server.port}/admin/login/")
    assert "Log in" in browser.title
    styled = browser.execute_script(STYLED)
    assert styled["sheets"] >= 2 and styled["loaded"], styled
    assert styled["background"] not in (None, "rgba(0, 0, 0, 0)"), styled  # the admin's colour
    browser.get(f"http://127.0.0.1:{server.port}/boom")
    wait = WebDriverWait(browser, 20)
    frames = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "div.traceback div.frame"))
    assert "shop/views.py" in frames[-1].text
    assert "boom from shop" in browser.page_source


def test_django_exception_shows_the_werkzeug_debugger_and_is_logged_once(
    devserve: StartDevserve, site: Path
) -> None:
    server = start_django(devserve, site, "--dev", "reload,werkzeug")
    assert_debugger_page(server, "/boom", "boom from shop")
    server.wait_for_log(r'"GET /boom HTTP/1\.1" 500')  # logged after the traceback
    assert server.log.count("ValueError: boom from shop") == 1, server.log


def test_django_error_without_the_debugger_is_djangos_page_logged_once(
    devserve: StartDevserve, site: Path
) -> None:
    server = start_django(devserve, site, "--dev", "reload")
    page = server.request("/boom", headers=HTML)
    assert page.status == 500
    assert "ValueError at /boom" in page.text  # Django's technical 500 page (DEBUG on)
    assert "EVALEX" not in page.text  # not Werkzeug's
    server.wait_for_log(r'"GET /boom HTTP/1\.1" 500')  # logged after the error record
    assert server.log.count("Internal Server Error: /boom") == 1, server.log
    assert server.log.count("Traceback (most recent call last)") == 1, server.log


SHOP_CHECK = """\
from django.core.checks import Warning, register


@register()
def shop_check(app_configs, **kwargs):
    return [Warning({message!r}, id="shop.W001")]
"""


def test_django_system_checks_and_unapplied_migrations_at_start_and_after_reloads(
    devserve: StartDevserve, site: Path
) -> None:
    models = site / "shop" / "models.py"
    write_file(models, SHOP_CHECK.format(message="shop needs a logo"))
    server = start_django(devserve, site, "--dev", "reload")
    server.wait_for_log(r"System check identified 1 issue \(0 silenced\)\.")
    assert "System check identified some issues:" in server.log
    assert "?: (shop.W001) shop needs a logo" in server.log
    server.wait_for_log(
        r"You have \d+ unapplied migration\(s\)\. Your project may not work properly until "
        r"you apply the migrations for app\(s\): admin, auth, contenttypes, sessions\. "
        r"Run 'python manage\.py migrate' to apply them\."
    )
    wait_watching(server)
    write_file(models, SHOP_CHECK.format(message="shop needs a name"))
    wait_reloads(server, 1)
    server.wait_for_log(r"\?: \(shop\.W001\) shop needs a name")
    write_file(models, "")
    wait_reloads(server, 2)
    server.wait_for_log(r"System check identified no issues \(0 silenced\)\.")


@pytest.mark.parametrize("mode", sorted(MODES))
def test_django_module_imported_on_a_request_is_watched_and_remembered(
    devserve: StartDevserve, site: Path, mode: str
) -> None:
    server = start_django(devserve, site, *MODES[mode], "--dev", "reload")
    wait_watching(server)
    assert "extras" not in server.log
    serves(server, "/lazy", "extras v0")  # the first import of extras
    server.wait_for_log(r"watching extras too \(imported since\)")
    write_file(site / "extras" / "helpers.py", 'VALUE = "extras v1"\n')
    serves(server, "/lazy", "extras v1")
    wait_reloads(server, 1)
    # The next image watches extras from its start, before anything imports it again.
    wait_watching(server, images=2)
    assert re.search(r"watching extras, mysite, shop, templates with", server.log)
    write_file(site / "extras" / "helpers.py", 'VALUE = "extras v2"\n')
    wait_reloads(server, 2)
    serves(server, "/lazy", "extras v2")


def test_django_static_file_edits_never_reload(
    devserve: StartDevserve, site: Path, reload_mode: str
) -> None:
    help_page = site / "shop" / "static" / "shop" / "help.html"
    write_file(help_page, "<p>help v0</p>")
    server = start_django(devserve, site, "--dev", "reload")
    wait_watching(server)
    serves(server, "/static/shop/help.html", "help v0")
    write_file(help_page, "<p>help v1</p>")
    serves(server, "/static/shop/help.html", "help v1")  # read from disk as it is
    projects.set_version(site / "shop" / "views.py", "v1")  # the next change that reloads
    wait_reloads(server, 1)
    reloaded = rf"reloaded in \d+ ms \({reload_mode}\): shop/views\.py \("
    assert re.search(reloaded, server.log), server.log


def test_django_project_config_files_reload(devserve: StartDevserve, site: Path) -> None:
    server = start_django(devserve, site, "--dev", "reload")
    wait_watching(server)
    write_file(site / "notes.txt", "not read by the app")
    write_file(site / "db.sqlite3-journal", "written by the app")
    write_file(site / ".env", "SHOP_NAME=tea\n")  # created: watched before it existed
    wait_reloads(server, 1)
    assert re.search(r"reloaded in \d+ ms \(\w+\): \.env \(", server.log), server.log


@pytest.mark.parametrize("mode", sorted(MODES))
def test_django_in_every_mode(devserve: StartDevserve, site: Path, mode: str) -> None:
    server = start_django(devserve, site, *MODES[mode], "--dev", "reload")
    css = server.request("/static/admin/css/base.css")
    assert css.status == 200 and css.headers["Content-Type"].startswith("text/css")
    wait_watching(server)
    serves(server, "/page", "page v0")
    projects.set_version(site / "shop" / "views.py", "v1")
    serves(server, "/version", "v1")
    projects.set_template(site / "shop" / "templates" / "shop" / "page.html", "page v1")
    serves(server, "/page", "page v1")
    # Threaded and gevent: Django's template loaders are reset in place; prefork workers
    # are other processes: they reload.
    reloads = 2 if mode == "prefork" else 1
    wait_reloads(server, reloads)
    assert not happens_within(lambda: count_reloads(server) > reloads, 0.5), server.log


# --- Flask ---


@pytest.fixture
def flaskr(tmp_path: Path) -> Path:
    return projects.flask_project(tmp_path / "flask-tutorial")


def start_flask(devserve: StartDevserve, flaskr: Path, *options: str) -> DevserveProcess:
    return devserve("-p", "0", *options, "flaskr:create_app()", cwd=flaskr)


def test_flask_views_and_templates(devserve: StartDevserve, flaskr: Path) -> None:
    server = start_flask(devserve, flaskr, "--dev", "reload,werkzeug")
    wait_watching(server)
    assert re.search(r"watching flaskr with inotify", server.log)
    serves(server, "/page", "page v0")
    projects.set_template(flaskr / "flaskr" / "templates" / "page.html", "page v1")
    serves(server, "/page", "page v1")
    write_file(flaskr / "flaskr" / "static" / "style.css", "body { color: red; }\n")
    serves(server, "/static/style.css", "color: red")
    server.wait_for_log(r"flaskr/templates/page\.html: re-read by flask, no reload needed")
    assert not happens_within(lambda: count_reloads(server), 0.5)
    for number in range(1, 3):
        projects.set_version(flaskr / "flaskr" / "views.py", f"v{number}")
        serves(server, "/version", f"v{number}")
    wait_reloads(server, 2)


def test_flask_exception_shows_the_werkzeug_debugger(devserve: StartDevserve, flaskr: Path) -> None:
    server = start_flask(devserve, flaskr, "--dev", "werkzeug")
    assert_debugger_page(server, "/boom", "boom from flaskr")


def test_flask_templates_in_prefork_workers(devserve: StartDevserve, flaskr: Path) -> None:
    server = start_flask(devserve, flaskr, "--workers", "2", "--dev", "reload")
    wait_watching(server)
    serves(server, "/page", "page v0")
    projects.set_template(flaskr / "flaskr" / "templates" / "page.html", "page v1")
    for _ in range(4):  # whichever worker answers
        serves(server, "/page", "page v1")
    server.wait_for_log(r"flaskr/templates/page\.html: re-read by flask, no reload needed")
    assert not happens_within(lambda: count_reloads(server), 0.5), server.log


# --- Bottle, Falcon, Pyramid ---


@pytest.mark.parametrize("framework", sorted(projects.ONE_MODULE_APPS))
def test_other_frameworks_serve_reload_and_debug(
    devserve: StartDevserve, tmp_path: Path, framework: str
) -> None:
    module = projects.one_module_project(tmp_path / "app", framework)
    server = devserve(
        "-p", "0", "--dev", "reload,werkzeug", f"{framework}app:app", cwd=module.parent
    )
    serves(server, "/version", "v0")
    wait_watching(server)
    projects.set_version(module, "v1")
    serves(server, "/version", "v1")
    assert_debugger_page(server, "/boom", f"boom from {framework}")


# --- ASGI ---

STARLETTE_APP = """\
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def home(request):
    return PlainTextResponse("hello")


app = Starlette(routes=[Route("/", home)])
"""

RAW_ASGI_APP = """\
async def app(scope, receive, send):
    pass
"""


@pytest.mark.parametrize("source", [STARLETTE_APP, RAW_ASGI_APP], ids=["starlette", "raw"])
@pytest.mark.parametrize(
    "options", [("--stop-after-init",), ("--dev", "reload"), ()], ids=["init", "reload", "plain"]
)
def test_an_asgi_app_is_refused_at_start(
    tmp_path: Path, env: dict[str, str], source: str, options: tuple[str, ...]
) -> None:
    write_file(tmp_path / "main.py", source)
    result = run_cli(["-p", "0", *options, "main:app"], cwd=tmp_path, env=env)
    assert_one_line_error(
        result, ExitCode.APP_LOAD, "'main:app' is an ASGI app", "uvicorn main:app --reload"
    )


WSGI_APP = """\
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"wsgi again"]
"""


def test_an_app_turned_asgi_by_an_edit_is_broken_code_until_fixed(
    devserve: StartDevserve, tmp_path: Path
) -> None:
    write_file(tmp_path / "main.py", WSGI_APP)
    server = devserve("-p", "0", "--dev", "reload", "main:app", cwd=tmp_path)
    wait_watching(server)
    write_file(tmp_path / "main.py", RAW_ASGI_APP)
    wait_reloads(server, 1)
    page = server.request("/")
    assert page.status == 500 and "'main:app' is an ASGI app" in page.text
    wait_watching(server, images=2)
    write_file(tmp_path / "main.py", WSGI_APP)
    wait_reloads(server, 2)
    serves(server, "/", "wsgi again")


def test_djangos_asgi_module_points_at_its_wsgi_side(site: Path, env: dict[str, str]) -> None:
    result = run_cli(["--stop-after-init", "mysite.asgi:application"], cwd=site, env=env)
    assert_one_line_error(result, ExitCode.APP_LOAD, "ASGI", "devserve mysite.wsgi:application")


def test_version(tmp_path: Path, env: dict[str, str]) -> None:
    from devserve import __version__

    for option in ("--version", "-V"):
        result = run_cli([option], cwd=tmp_path, env=env)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"devserve {__version__} (Python 3.")
