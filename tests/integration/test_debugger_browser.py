"""--dev werkzeug in a real browser: headless Chromium opens a failing route, sees the
traceback, unlocks the console with the PIN and evaluates an expression in a frame."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.integration.conftest import StartDevserve
from tests.integration.harness import APPS

PIN = "123-456-789"


def test_traceback_pin_and_console_in_a_browser(
    devserve: StartDevserve, browser: Any, tmp_path: Path
) -> None:
    from selenium.common.exceptions import TimeoutException as TimeoutError_
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    server = devserve(
        "-p", "0", "--dev", "werkzeug", "--debugger-pin", PIN, "slowapp:broken_app", cwd=APPS
    )
    wait = WebDriverWait(browser, 20)
    browser.get(f"http://127.0.0.1:{server.port}/")

    # The traceback page.
    assert "boom from broken_app" in browser.page_source
    frames = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "div.traceback div.frame"))
    assert frames
    # The console icon of the innermost frame (broken_app itself).
    icon = frames[-1].find_element(By.CSS_SELECTOR, "img[title^='Open an interactive']")
    browser.execute_script("arguments[0].click();", icon)

    # Locked: the PIN prompt comes first (it fades in: wait until it takes input).
    pin = wait.until(
        shown.element_to_be_clickable((By.CSS_SELECTOR, ".pin-prompt input[name='pin']"))
    )
    pin.click()
    pin.send_keys(PIN)
    browser.find_element(By.CSS_SELECTOR, ".pin-prompt input[type='submit']").click()
    try:
        wait.until(shown.invisibility_of_element_located((By.CSS_SELECTOR, ".pin-prompt")))
    except TimeoutError_ as error:
        shot = tmp_path / "pin-prompt.png"
        browser.save_screenshot(str(shot))
        prompt = browser.find_element(By.CSS_SELECTOR, ".pin-prompt").text
        raise AssertionError(f"the PIN prompt stayed ({prompt!r}); see {shot}") from error

    # Evaluate an expression in that frame and read the answer from the page.
    command = wait.until(
        shown.visibility_of_element_located((By.CSS_SELECTOR, "pre.console form input"))
    )
    command.send_keys("local_answer * 2", Keys.ENTER)
    wait.until(lambda d: "84" in d.find_element(By.CSS_SELECTOR, "pre.console div.output").text)
    output = browser.find_element(By.CSS_SELECTOR, "pre.console div.output").text
    assert ">>> local_answer * 2" in output
