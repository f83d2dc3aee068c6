"""Live reload in a browser: from a saved file to what the page shows, on a real project.

On the stock Django project the integration tests use (``tests/projects.py``, built in a
temporary folder: its page ``/page`` shows the ``VERSION`` of ``shop/views.py`` in
``<p id="version">`` and loads the stylesheet ``/static/shop/site.css``), devserve runs as a
developer starts it, in its own process group on 127.0.0.1, its log in a file::

    python -m devserve -p PORT --dev reload mysite.wsgi:application

and headless Chromium (Selenium, a profile of its own) shows ``/page``. Measured, ``--edits``
times each:

* controller edit: rewrite the ``VERSION`` line of ``shop/views.py``; devserve reloads its
  code, the page's event stream ends, the page reconnects, sees new code and reloads itself.
  Timed from the wall clock just before the write to the moment the reloaded page's DOM was
  ready, as the browser itself recorded it (``performance.timeOrigin`` + the navigation
  entry's ``domInteractive``), so Selenium's polling (every 10 ms, until ``#version`` shows
  the new text) adds nothing. Beside it, devserve's own ``reloaded in N ms`` for the same
  edits, from its log;
* stylesheet edit: rewrite ``shop/static/shop/site.css`` with a new colour; devserve sends a
  ``css`` event, with no reload, and the page swaps the ``<link>`` for a fresh copy. A
  watcher installed in the page before the write (a MutationObserver on ``<head>`` that
  listens to each new stylesheet's ``load``, and a requestAnimationFrame poll as a fallback)
  notes ``Date.now()`` once ``#version`` has the new colour; timed from the write to then.
  Also checked: a marker set on ``window`` before these edits is still there (the page was
  never reloaded), and devserve logged no ``reloaded in`` line for them;
* page reload with no change: ``location.reload()`` called in the page, timed to the reloaded
  page's DOM: the browser's own share of a controller edit, which no server can shorten;
* HTTP reload with event streams held: with the browser closed, a views edit timed from the
  write to the first ``GET /version`` (a new connection every 5 ms) answering the new version,
  as ``frameworks.py`` does, first with no event stream open, then with 200 open (raw sockets
  that sent ``GET /__devserve__/events`` and read their ``hello``; each reload ends them, and
  they are opened again before the next edit). A stream a reload leaves open is counted.

A missed edit is one not seen within 10 s (5 s for a stylesheet); the series goes on. Before
each edit the benchmark waits until the image serving has set its watches (its ``watching
... (ready in N ms)`` line), and 0.3 s after the previous edit is seen: neither is timed.

Run with the Python of a virtualenv with devserve and its test extra (Django, Selenium), with
Debian's ``chromium`` and ``chromium-driver`` installed, from the repository root::

    pip install -e '.[test]'
    python benchmarks/livereload.py [--edits 10] [--keep]

Prints a table and the targets: save to new DOM p50 within 50 ms of devserve's reload p50;
stylesheet edit p50 <= 50 ms; the page kept and no reload through the stylesheet edits; the
HTTP reload p50 with 200 streams about that with none (within 25 % or 20 ms). Exits 0 whatever
the figures; 1 when it could not measure (devserve or the browser did not start).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import secrets
import selectors
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from frameworks import ms, timed_edit, wait_served
from processes import HOST, free_port, spawn, stop
from reload import percentile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import browser as chromium  # headless Chromium, as the browser tests start it
from tests import projects  # the projects the integration tests build
from tests.integration.events import EventStream  # a raw client of the event stream

READY_TIMEOUT = 60.0  # seconds devserve gets to serve the project
WATCH_TIMEOUT = 10.0  # seconds an image gets to set its watches
EDIT_TIMEOUT = 10.0  # a controller edit not shown by then is missed
CSS_TIMEOUT = 5.0  # a stylesheet edit not applied by then is missed
BROWSER_POLL = 0.01  # between two looks at the page
EDIT_SPACING = 0.3  # after an edit is seen, before the next; not part of any figure
CSS_GRACE = 1.0  # after the last stylesheet edit: time for a reload it should not cause
STREAMS = 200
STREAM_END_TIMEOUT = 2.0  # after a reload is served, its streams must have ended by then
DEFAULT_EDITS = 10
TARGET_DOM_OVER_RELOAD = 0.050  # save -> DOM p50 minus devserve's reload p50, at most
TARGET_CSS = 0.050  # stylesheet edit p50, at most
SAME_WITH_STREAMS = (1.25, 0.020)  # "with 200 streams ~ without": within 25 % or 20 ms

RELOADED = re.compile(r"reloaded in (\d+) ms")
WATCHING = re.compile(r"watching .* \(ready in \d+ ms\)")

# The text of #version and when the document showing it had its DOM ready (epoch ms).
PAGE_STATE = """
const shown = document.getElementById("version");
const [navigation] = performance.getEntriesByType("navigation");
const ready = navigation && navigation.domInteractive > 0
  ? performance.timeOrigin + navigation.domInteractive : null;
return [shown ? shown.textContent : null, ready];
"""
# When (epoch ms) the document's DOM was ready, once it is.
PAGE_STATE_READY = """(() => {
  const [navigation] = performance.getEntriesByType("navigation");
  return navigation && navigation.domInteractive > 0
    ? performance.timeOrigin + navigation.domInteractive : null;
})();"""
# Notes in window.__cssSeen when #version first has the colour arguments[0].
WATCH_STYLESHEET = """
const expected = arguments[0];
const check = () => {
  const shown = document.getElementById("version");
  if (window.__cssSeen === null && shown && getComputedStyle(shown).color === expected) {
    window.__cssSeen = Date.now();
  }
};
window.__cssSeen = null;
if (window.__cssObserver) window.__cssObserver.disconnect();
window.__cssObserver = new MutationObserver((records) => {
  for (const record of records) {
    for (const node of record.addedNodes) {
      if (node instanceof HTMLLinkElement && node.matches('link[rel~="stylesheet"]')) {
        node.addEventListener("load", check);
      }
    }
  }
});
window.__cssObserver.observe(document.head, { childList: true });
cancelAnimationFrame(window.__cssFrame);
const poll = () => {
  check();
  if (window.__cssSeen === null) window.__cssFrame = requestAnimationFrame(poll);
};
poll();
"""


class BenchmarkError(Exception):
    """Something could not be measured; the message says why, in one line."""


@dataclasses.dataclass
class Site:
    """The project's copy, and the next version its views edits write."""

    folder: Path
    log: Path
    version: int = 0

    @property
    def views(self) -> Path:
        return self.folder / "shop" / "views.py"

    @property
    def stylesheet(self) -> Path:
        return self.folder / "shop" / "static" / "shop" / "site.css"

    def next_version(self) -> str:
        self.version += 1
        return f"v{self.version}"

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def reloads(self) -> list[float]:
        """devserve's ``reloaded in N ms`` so far, in seconds."""
        return [int(found) / 1000 for found in RELOADED.findall(self.log_text())]

    def wait_watching(self) -> bool:
        """Until the image serving now (one per reload so far, plus the first) has set its
        watches; False after WATCH_TIMEOUT."""
        deadline = time.monotonic() + WATCH_TIMEOUT
        while time.monotonic() < deadline:
            text = self.log_text()
            if len(WATCHING.findall(text)) > len(RELOADED.findall(text)):
                return True
            time.sleep(BROWSER_POLL)
        return False


@dataclasses.dataclass
class Results:
    page: list[float | None] = dataclasses.field(default_factory=list)  # None: missed
    server_reloads: list[float] = dataclasses.field(default_factory=list)  # from the log
    css: list[float | None] = dataclasses.field(default_factory=list)
    plain: list[float | None] = dataclasses.field(default_factory=list)  # no code change
    marker_survived: bool | None = None
    css_reloads: int | None = None
    http: dict[int, list[float | None]] = dataclasses.field(default_factory=dict)  # by streams
    streams_left_open: int = 0
    notes: list[str] = dataclasses.field(default_factory=list)
    loads: list[float] = dataclasses.field(default_factory=list)


# --- the browser ---


def open_browser(profile: Path) -> Any:
    """Headless Chromium driven by Selenium, on a profile of its own (as the browser tests)."""
    from selenium.common.exceptions import WebDriverException

    if not chromium.installed():
        raise BenchmarkError(chromium.MISSING)
    try:
        return chromium.start_chromium(profile)
    except WebDriverException as error:
        raise BenchmarkError(f"the browser did not start: {error.msg}") from error


def run_script(driver: Any, script: str, *args: Any) -> Any:
    """The script's value, or None while the page cannot run it (it is reloading)."""
    from selenium.common.exceptions import WebDriverException

    try:
        return driver.execute_script(script, *args)
    except WebDriverException:
        return None


def wait_page(driver: Any, version: str, timeout: float) -> float | None:
    """When (epoch seconds) the DOM of the page showing ``version`` was ready, or None if
    no page shows it within ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = run_script(driver, PAGE_STATE)
        if state and state[0] == version and state[1]:
            return float(state[1]) / 1000
        time.sleep(BROWSER_POLL)
    return None


def wait_value(driver: Any, script: str, timeout: float) -> Any:
    """The script's first value that is not null, or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = run_script(driver, script)
        if value is not None:
            return value
        time.sleep(BROWSER_POLL)
    return None


def controller_edits(driver: Any, site: Site, edits: int, results: Results) -> None:
    """Views edits, timed from the write to the reloaded page's DOM."""
    reloads_before = len(site.reloads())
    for _ in range(edits):
        if not site.wait_watching():
            results.notes.append("an image did not log its watches in time (edit made anyway)")
        version = site.next_version()
        written = time.time()
        projects.set_version(site.views, version)
        ready = wait_page(driver, version, EDIT_TIMEOUT)
        results.page.append(None if ready is None else ready - written)
        time.sleep(EDIT_SPACING)
    results.server_reloads = site.reloads()[reloads_before:]


def stylesheet_edits(driver: Any, site: Site, edits: int, results: Results) -> None:
    """Stylesheet edits, timed from the write to the new colour in the page; and whether the
    page stayed and devserve did not reload meanwhile."""
    marker = secrets.token_hex(8)
    run_script(driver, "window.__benchMarker = arguments[0];", marker)
    reloads_before = len(site.reloads())
    for number in range(1, edits + 1):
        colour = f"rgb({number % 256}, 0, 0)"
        run_script(driver, WATCH_STYLESHEET, colour)
        written = time.time()
        site.stylesheet.write_text(f"p {{ color: {colour}; }}\n", encoding="utf-8")
        seen = wait_value(driver, "return window.__cssSeen;", CSS_TIMEOUT)
        results.css.append(None if seen is None else float(seen) / 1000 - written)
        time.sleep(EDIT_SPACING)
    time.sleep(CSS_GRACE)
    results.marker_survived = run_script(driver, "return window.__benchMarker;") == marker
    results.css_reloads = len(site.reloads()) - reloads_before


def plain_reloads(driver: Any, edits: int, results: Results) -> None:
    """The browser's own share: ``location.reload()`` of the page with no code change,
    from the call to the reloaded page's DOM (what no server can make shorter)."""
    for _ in range(edits):
        asked = run_script(driver, "window.__old = true; location.reload(); return Date.now();")
        deadline = time.monotonic() + EDIT_TIMEOUT
        ready = None
        while ready is None and time.monotonic() < deadline:
            state = run_script(driver, "return window.__old ? null : " + PAGE_STATE_READY)
            ready = float(state) if state else None
            time.sleep(BROWSER_POLL)
        results.plain.append(None if ready is None or asked is None else (ready - asked) / 1000)
        time.sleep(EDIT_SPACING)


def browser_part(site: Site, port: int, scratch: Path, edits: int, results: Results) -> None:
    """The controller and stylesheet edits, in one page; the browser quits at the end."""
    driver = open_browser(scratch / "chromium-profile")
    try:
        driver.get(f"http://{HOST}:{port}/page")
        if wait_page(driver, "v0", EDIT_TIMEOUT) is None:
            raise BenchmarkError("the browser never showed the page with v0")
        controller_edits(driver, site, edits, results)
        stylesheet_edits(driver, site, edits, results)
        plain_reloads(driver, edits, results)
    finally:
        driver.quit()


# --- event streams held by the server ---


def open_streams(port: int, count: int) -> list[EventStream]:
    """``count`` event streams, each greeted with its ``hello``."""
    streams: list[EventStream] = []
    try:
        for _ in range(count):
            stream = EventStream(port, HOST)
            streams.append(stream)
            stream.expect("hello")
    except (OSError, EOFError, AssertionError) as error:
        close_streams(streams)
        raise BenchmarkError(f"event stream {len(streams)} of {count}: {error!r}") from error
    return streams


def close_streams(streams: list[EventStream]) -> None:
    for stream in streams:
        stream.close()


def left_open(streams: list[EventStream], timeout: float) -> int:
    """How many of ``streams`` the server has not closed within ``timeout``."""
    pending = len(streams)
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        for stream in streams:
            selector.register(stream.sock, selectors.EVENT_READ, stream.sock)
        while pending and (remaining := deadline - time.monotonic()) > 0:
            for key, _ in selector.select(remaining):
                try:
                    ended = not key.data.recv(65536)  # events meanwhile are dropped
                except OSError:
                    ended = True
                if ended:
                    selector.unregister(key.fileobj)
                    pending -= 1
    return pending


def http_edits(port: int, site: Site, edits: int, streams: int, results: Results) -> None:
    """Views edits timed over HTTP, with ``streams`` event streams open at each edit."""
    latencies = results.http.setdefault(streams, [])
    for _ in range(edits):
        if not site.wait_watching():
            results.notes.append("an image did not log its watches in time (edit made anyway)")
        try:
            held = open_streams(port, streams)
        except BenchmarkError as error:
            results.notes.append(f"series with {streams} streams ended: {error}")
            return
        try:
            version = site.next_version()
            edit = functools.partial(projects.set_version, site.views, version)
            latencies.append(timed_edit(port, edit, "/version", version))
            results.streams_left_open += left_open(held, STREAM_END_TIMEOUT)
        finally:
            close_streams(held)
        time.sleep(EDIT_SPACING)


# --- the run ---


def measure(scratch: Path, edits: int) -> Results:
    """Everything, on one devserve, stopped (its whole process group) at the end."""
    results = Results(loads=[os.getloadavg()[0]])
    site = Site(projects.django_project(scratch / "site"), scratch / "devserve.log")
    home = scratch / "home"
    home.mkdir()
    port = free_port()
    command = [sys.executable, "-m", "devserve", "-p", str(port), "--dev", "reload"]
    with open(site.log, "wb") as log:
        process = spawn([*command, "mysite.wsgi:application"], site.folder, home, log)
        try:
            if wait_served(port, "/version", "v0", READY_TIMEOUT) is None:
                raise BenchmarkError(f"devserve did not serve /version within {READY_TIMEOUT:g}s")
            if not site.wait_watching():
                raise BenchmarkError(f"devserve did not log its watches in {WATCH_TIMEOUT:g}s")
            print("browser: controller and stylesheet edits...", file=sys.stderr)
            browser_part(site, port, scratch, edits, results)
            for streams in (0, STREAMS):
                print(f"HTTP reloads with {streams} event streams open...", file=sys.stderr)
                http_edits(port, site, edits, streams, results)
        finally:
            stop(process)
    results.loads.append(os.getloadavg()[0])
    return results


# --- the report ---


def seen(values: list[float | None]) -> list[float]:
    return [value for value in values if value is not None]


def verdict(ok: bool | None) -> str:
    return "-" if ok is None else ("met" if ok else "NOT MET")


def row(label: str, values: list[float | None], missed: bool = True) -> str:
    got = seen(values)
    figures = [percentile(got, 0.5), percentile(got, 0.9), max(got) if got else None]
    late = str(len(values) - len(got)) if missed else "-"
    return f"{label:<40} " + " ".join(f"{ms(f):>6}" for f in figures) + f" {late:>7}"


def report(results: Results, edits: int) -> None:
    loads = results.loads
    print(
        f"Live reload, Django project, {edits} edits of each kind; {os.cpu_count()} CPUs, "
        f"load average (1 min) {loads[0]:.2f} at the start, {loads[-1]:.2f} at the end"
    )
    print(f"{'(ms)':<40} {'p50':>6} {'p90':>6} {'max':>6} {'missed':>7}")
    print(row("controller edit, save -> new DOM", results.page))
    print(row("server reload (devserve's log)", list(results.server_reloads), missed=False))
    print(row("stylesheet edit, save -> new colour", results.css))
    print(row("page reload, no change (browser's own)", results.plain))
    print(row("HTTP reload, no event stream", results.http.get(0, [])))
    print(row(f"HTTP reload, {STREAMS} event streams open", results.http.get(STREAMS, [])))
    print()
    page = percentile(seen(results.page), 0.5)
    server = percentile(results.server_reloads, 0.5)
    over = None if page is None or server is None else page - server
    print(
        f"save -> DOM p50 - server reload p50: {ms(over)} ms "
        f"(target <= {TARGET_DOM_OVER_RELOAD * 1000:.0f}): "
        f"{verdict(None if over is None else over <= TARGET_DOM_OVER_RELOAD)}"
    )
    if len(results.server_reloads) != edits:
        print(f"  note: {len(results.server_reloads)} reloads logged for {edits} edits")
    css = percentile(seen(results.css), 0.5)
    print(
        f"stylesheet edit p50: {ms(css)} ms (target <= {TARGET_CSS * 1000:.0f}): "
        f"{verdict(None if css is None else css <= TARGET_CSS)}"
    )
    survived = results.marker_survived
    print(
        "page kept through the stylesheet edits (window marker): "
        f"{'-' if survived is None else ('yes' if survived else 'NO')}: {verdict(survived)}"
    )
    reloads = results.css_reloads
    print(
        f"server reloads caused by stylesheet edits: {'-' if reloads is None else reloads} "
        f"(must be 0): {verdict(None if reloads is None else reloads == 0)}"
    )
    print(streams_line(results))
    print(f"event streams a reload left open: {results.streams_left_open} (must be 0)")
    for note in dict.fromkeys(results.notes):
        print(f"note: {note}")


def streams_line(results: Results) -> str:
    none = percentile(seen(results.http.get(0, [])), 0.5)
    held = percentile(seen(results.http.get(STREAMS, [])), 0.5)
    if not none or held is None:
        return f"HTTP reload p50, {STREAMS} streams / none: - (target ~1)"
    factor, slack = SAME_WITH_STREAMS
    same = held <= none * factor or held - none <= slack
    return (
        f"HTTP reload p50, {STREAMS} streams / none: {held / none:.2f} "
        f"(target ~1: within {factor - 1:.0%} or {slack * 1000:.0f} ms): {verdict(same)}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=DEFAULT_EDITS, help="edits of each kind")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    options = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="devserve-livereload-bench-"))
    try:
        results = measure(scratch, max(1, options.edits))
    except BenchmarkError as error:
        print(f"could not measure: {error}", file=sys.stderr)
        return 1
    finally:
        if options.keep:
            print(f"kept {scratch} (devserve.log, site/)", file=sys.stderr)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    report(results, max(1, options.edits))
    return 0


if __name__ == "__main__":
    sys.exit(main())
