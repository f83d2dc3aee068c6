"""Live reload in a real browser (headless Chromium): the page follows the code with no user
action, a stylesheet is swapped without a page reload, a syntax error shows over the page
and goes with the fix; on the Django and Flask projects, and behind a strict CSP."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from tests import projects
from tests.integration.conftest import StartDevserve
from tests.integration.harness import APPS, wait_watching, write_file

OVERLAY_TEXT = """
const host = document.getElementById("devserve-error-overlay");
return host ? host.shadowRoot.textContent : null;
"""
COLOUR = 'return getComputedStyle(document.getElementById("version")).color;'


def version_shown(browser: Any) -> str | None:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return str(browser.find_element(By.ID, "version").text)
    except (NoSuchElementException, StaleElementReferenceException):
        return None


def wait_for(browser: Any, condition: Any, what: str, timeout: float = 20) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(lambda driver: condition(driver), what)


MODES = {"warm": [], "exec": ["--reload-mode", "exec"], "prefork": ["--workers", "2"]}


@pytest.mark.parametrize("mode", MODES)
def test_a_django_page_follows_views_stylesheets_and_syntax_errors(
    devserve: StartDevserve, browser: Any, tmp_path: Path, mode: str
) -> None:
    site = projects.django_project(tmp_path / "site")
    views = site / "shop" / "views.py"
    options = MODES[mode]
    server = devserve("-p", "0", "--dev", "reload", *options, "mysite.wsgi:application", cwd=site)
    wait_watching(server)
    browser.get(f"http://127.0.0.1:{server.port}/page")
    wait_for(browser, lambda b: version_shown(b) == "v0", "the page")

    # A view edited: the new text appears, with no user action.
    projects.set_version(views, "v1")
    wait_for(browser, lambda b: version_shown(b) == "v1", "the page to show v1")

    # A stylesheet edited: the colour changes, the page stays (its state survives).
    browser.execute_script("window.devserveMarker = 42;")
    assert browser.execute_script(COLOUR) == "rgb(0, 0, 0)"
    write_file(site / "shop" / "static" / "shop" / "site.css", "p { color: rgb(200, 0, 0); }\n")
    wait_for(browser, lambda b: b.execute_script(COLOUR) == "rgb(200, 0, 0)", "the new colour")
    assert browser.execute_script("return window.devserveMarker;") == 42

    # A syntax error: an overlay names the file, over the page of the old code.
    good = views.read_text(encoding="utf-8")
    write_file(views, good.replace("def page(request):", "def page(request)"))
    overlay = wait_for(browser, lambda b: b.execute_script(OVERLAY_TEXT), "the overlay")
    assert "shop/views.py" in overlay and "SyntaxError" in overlay
    assert browser.execute_script("return window.devserveMarker;") == 42

    # Fixed: the overlay goes and the new code's text shows.
    write_file(views, good)
    projects.set_version(views, "v2")
    wait_for(browser, lambda b: version_shown(b) == "v2", "the page to show v2")
    assert browser.execute_script(OVERLAY_TEXT) is None


def test_a_flask_app_that_failed_to_load_reloads_itself_once_fixed(
    devserve: StartDevserve, browser: Any, tmp_path: Path
) -> None:
    flaskr = projects.flask_project(tmp_path / "flask")
    views = flaskr / "flaskr" / "views.py"
    good = views.read_text(encoding="utf-8")
    write_file(views, good.replace('VERSION = "v0"', 'VERSION = "v0"\nraise ValueError("not yet")'))
    server = devserve("-p", "0", "--dev", "reload", "flaskr:create_app()", cwd=flaskr)
    wait_watching(server)
    browser.get(f"http://127.0.0.1:{server.port}/page")
    assert "The app failed to load" in browser.page_source
    overlay = wait_for(browser, lambda b: b.execute_script(OVERLAY_TEXT), "the overlay")
    assert "ValueError: not yet" in overlay and "flaskr/views.py" in overlay
    write_file(views, good)
    wait_for(browser, lambda b: version_shown(b) == "v0", "the page to show v0")
    assert browser.execute_script(OVERLAY_TEXT) is None


def test_a_page_with_a_strict_content_security_policy_runs_the_client(
    devserve: StartDevserve, browser: Any, tmp_path: Path
) -> None:
    """``script-src 'self'; style-src 'self'``: no inline script or style runs, and the
    client needs none."""
    folder = tmp_path / "live"
    (folder / "static").mkdir(parents=True)
    shutil.copy(APPS / "liveapp.py", folder / "liveapp.py")
    (folder / "static" / "site.css").write_text(projects.SITE_CSS, encoding="utf-8")
    server = devserve("-p", "0", "--dev", "reload", "liveapp:app", cwd=folder)
    wait_watching(server)
    assert "script-src 'self'" in server.request("/csp").headers["Content-Security-Policy"]
    browser.get(f"http://127.0.0.1:{server.port}/csp")
    wait_for(browser, lambda b: version_shown(b) == "v0", "the page")
    browser.execute_script("window.devserveMarker = 7;")
    write_file(folder / "static" / "site.css", "p { color: rgb(0, 0, 200); }\n")
    wait_for(browser, lambda b: b.execute_script(COLOUR) == "rgb(0, 0, 200)", "the new colour")
    assert browser.execute_script("return window.devserveMarker;") == 7
    source = (folder / "liveapp.py").read_text(encoding="utf-8")
    write_file(folder / "liveapp.py", source + "\ndef broken(:\n")
    overlay = wait_for(browser, lambda b: b.execute_script(OVERLAY_TEXT), "the overlay")
    assert "liveapp.py" in overlay
    write_file(folder / "liveapp.py", source.replace('VERSION = "v0"', 'VERSION = "v1"'))
    wait_for(browser, lambda b: version_shown(b) == "v1", "the page to show v1")
