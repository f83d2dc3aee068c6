"""Live reload through HTTP, on the real CLI: the client's tag in HTML pages (and nowhere
else), the event stream's ``hello``/``error``/``css``/``reload``, streams held without a
thread and closed at a reload, in every mode and on real projects. The browser's side is
``test_live_reload_browser.py``."""

from __future__ import annotations

import gzip
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import projects
from tests.integration.conftest import StartDevserve
from tests.integration.events import EVENTS_PATH, EventStream
from tests.integration.harness import (
    APPS,
    DevserveProcess,
    count_reloads,
    happens_within,
    wait_reloads,
    wait_until,
    wait_watching,
    write_addon,
    write_file,
)
from tests.integration.test_frameworks import serves

TAG = re.compile(
    r'<script src="/__devserve__/client\.js" data-image="([0-9a-f]+-[0-9a-f]+)" defer></script>'
)
PAGE = (
    "<!doctype html><html><head><title>live</title>"
    '<link rel="stylesheet" href="/static/site.css"></head>'
    '<body><p id="version">{version}</p></body></html>'
)


OpenStream = Callable[..., EventStream]


@pytest.fixture
def stream_to() -> Iterator[OpenStream]:
    """Open event streams (``stream_to(port)``); every one is closed after the test."""
    opened: list[EventStream] = []

    def open_stream(port: int, **options: Any) -> EventStream:
        opened.append(EventStream(port, **options))
        return opened[-1]

    yield open_stream
    for stream in opened:
        stream.close()


@pytest.fixture
def live(tmp_path: Path) -> Path:
    """A copy of ``liveapp.py`` with its static folder, in a folder of its own."""
    folder = tmp_path / "live"
    (folder / "static").mkdir(parents=True)
    shutil.copy(APPS / "liveapp.py", folder / "liveapp.py")
    (folder / "static" / "site.css").write_text(projects.SITE_CSS, encoding="utf-8")
    (folder / "static" / "app.js").write_text("console.log(1);\n", encoding="utf-8")
    return folder


def start(devserve: StartDevserve, folder: Path, *options: str) -> DevserveProcess:
    return devserve("-p", "0", "--dev", "reload", *options, "liveapp:app", cwd=folder)


def set_version(folder: Path, version: str) -> None:
    projects.set_version(folder / "liveapp.py", version)


def image_of(server: DevserveProcess, path: str = "/") -> str:
    match = TAG.search(server.request(path).raw)
    assert match is not None, f"no client tag in {path}"
    return match.group(1)


def without_tag(text: str) -> str:
    return TAG.sub("", text)


def serving_process(server: DevserveProcess) -> int:
    """The PID that serves: the warm parent's serving child, else devserve itself."""
    import psutil

    def child() -> int | None:
        for process in psutil.Process(server.pid).children():
            if "serving" in " ".join(process.cmdline()):
                return process.pid
        return None

    if "(warm reload)" not in server.log:
        return server.pid
    return wait_until(child, 10, "the serving child")


# --- the tag ---


def test_html_pages_load_the_client_before_body_with_their_length_fixed(
    devserve: StartDevserve, live: Path
) -> None:
    server = start(devserve, live)
    page = server.request("/")
    assert page.status == 200
    assert TAG.search(page.raw) is not None
    assert page.raw.endswith("defer></script></body></html>")
    assert without_tag(page.raw) == PAGE.format(version="v0")
    assert int(page.headers["Content-Length"]) == len(page.body)
    # Its validators go: a 304 would bring back a page of older code.
    assert "ETag" not in page.headers and "Last-Modified" not in page.headers
    head = server.request("/", method="HEAD")  # the headers a GET gets, no body
    assert head.body == b"" and head.headers["Content-Length"] == page.headers["Content-Length"]
    assert "ETag" not in head.headers

    streamed = server.request("/streamed")  # "</body>" cut between two chunks
    assert re.search(r"<p>streamed</p><script [^>]+></script></body></html>$", streamed.raw)
    assert "Content-Length" not in streamed.headers
    bodyless = server.request("/bodyless")
    assert re.fullmatch(r"<p>no body tag</p><script [^>]+></script>", bodyless.raw)
    assert int(bodyless.headers["Content-Length"]) == len(bodyless.body)
    missing = server.request("/missing")  # an error page reloads itself too
    assert missing.status == 404 and TAG.search(missing.raw) is not None


def test_what_is_not_an_html_page_is_left_alone(devserve: StartDevserve, live: Path) -> None:
    server = start(devserve, live)
    page = PAGE.format(version="v0").encode()
    assert server.request("/json").body == b'{"html": "</body>"}'
    compressed = server.request("/gzip")
    assert compressed.headers["Content-Encoding"] == "gzip"
    assert gzip.decompress(compressed.body) == page
    assert server.request("/download").body == page
    fetched = server.request("/", headers={"Sec-Fetch-Dest": "empty"})  # fetch(), XHR
    assert fetched.raw == page.decode()
    assert server.request("/static/site.css").text == projects.SITE_CSS


def test_the_client_script_is_served(devserve: StartDevserve, live: Path) -> None:
    server = start(devserve, live)
    script = server.request("/__devserve__/client.js")
    assert script.status == 200
    assert script.headers["Content-Type"].startswith("text/javascript")
    assert 'new EventSource("/__devserve__/events")' in script.text
    assert int(script.headers["Content-Length"]) == len(script.body)


@pytest.mark.parametrize("dev", [["--dev", "reload", "--no-live-reload"], ["--dev", "werkzeug"]])
def test_without_live_reload_pages_are_untouched_and_the_paths_are_the_apps(
    devserve: StartDevserve, live: Path, dev: list[str]
) -> None:
    server = devserve("-p", "0", *dev, "liveapp:app", cwd=live)
    assert server.request("/").raw == PAGE.format(version="v0")
    for path in (EVENTS_PATH, "/__devserve__/client.js"):
        answer = server.request(path)
        assert (answer.status, answer.raw) == (404, "<html><body>none</body></html>")


# --- the events ---


def test_hello_names_new_code_after_every_reload(
    devserve: StartDevserve, live: Path, reload_mode: str, stream_to: OpenStream
) -> None:
    server = start(devserve, live)
    wait_watching(server)
    stream = stream_to(server.port)
    assert stream.status == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    first = stream.expect("hello")["image"]
    assert first == image_of(server)
    seen = {first}
    for number in (1, 2):
        set_version(live, f"v{number}")
        # Told to reload first: the page asks for itself while the server reloads.
        assert stream.events_to_the_end(10) == ["reload"], "open across a reload"
        wait_reloads(server, number)
        stream = stream_to(server.port)
        image = stream.expect("hello")["image"]
        assert image not in seen
        assert image == image_of(server)
        seen.add(image)
        wait_watching(server, images=number + 1)
    stream.close()


def test_a_syntax_error_is_an_error_event_that_stands_until_fixed(
    devserve: StartDevserve, live: Path, reload_mode: str, stream_to: OpenStream
) -> None:
    server = start(devserve, live)
    wait_watching(server)
    stream = stream_to(server.port)
    image = stream.expect("hello")["image"]
    source = (live / "liveapp.py").read_text(encoding="utf-8")
    write_file(live / "liveapp.py", source.replace("(environ, start", "(environ start"))
    error = stream.expect("error")
    line = source[: source.index("def app(environ")].count("\n") + 1
    assert error["file"] == "liveapp.py" and error["line"] == line
    assert error["message"].startswith("SyntaxError: ")
    assert error["source"] == "def app(environ start_response):"
    # A page opened meanwhile sees it too, over the old code, which still serves.
    later = stream_to(server.port)
    assert later.expect("hello")["image"] == image
    assert later.expect("error") == error
    assert server.request("/").status == 200
    write_file(live / "liveapp.py", source.replace('VERSION = "v0"', 'VERSION = "fixed"'))
    assert stream.ends_within(10) and later.ends_within(10)
    serves(server, "/", "fixed")
    fixed = stream_to(server.port)
    assert fixed.expect("hello")["image"] != image
    with pytest.raises(TimeoutError):
        fixed.next(timeout=0.5)  # no error any more
    assert count_reloads(server) == 1


def test_a_failed_load_is_an_error_event_and_its_page_loads_the_client(
    devserve: StartDevserve, live: Path, stream_to: OpenStream
) -> None:
    source = (live / "liveapp.py").read_text(encoding="utf-8")
    broken = source.replace('VERSION = "v0"', 'VERSION = "v0"\nraise ValueError("not today")')
    write_file(live / "liveapp.py", broken)
    server = start(devserve, live)
    page = server.request("/", headers={"Accept": "text/html"})
    assert page.status == 500 and "not today" in page.raw
    assert TAG.search(page.raw) is not None
    stream = stream_to(server.port)
    stream.expect("hello")
    error = stream.expect("error")
    assert error["message"] == "ValueError: not today"
    line = broken[: broken.index("raise")].count("\n") + 1
    assert (error["file"], error["line"]) == ("liveapp.py", line)
    assert error["source"] == 'raise ValueError("not today")'


def test_a_stylesheet_edit_is_a_css_event_and_no_reload(
    devserve: StartDevserve, live: Path, stream_to: OpenStream
) -> None:
    server = start(devserve, live)
    wait_watching(server)
    stream = stream_to(server.port)
    image = stream.expect("hello")["image"]
    write_file(live / "static" / "site.css", "p { color: rgb(255, 0, 0); }\n")
    assert stream.expect("css") == {"path": "/static/site.css"}
    assert stream_to(server.port).expect("hello")["image"] == image
    assert "rgb(255, 0, 0)" in server.request("/static/site.css").text
    assert count_reloads(server) == 0


def test_another_static_file_is_a_reload_event_and_a_script_elsewhere_nothing(
    devserve: StartDevserve, live: Path, stream_to: OpenStream
) -> None:
    server = start(devserve, live)
    wait_watching(server)
    stream = stream_to(server.port)
    stream.expect("hello")
    write_file(live / "static" / "app.js", "console.log(2);\n")
    assert stream.expect("reload") == {"paths": ["/static/app.js"]}  # fetched anew first
    (live / "tools").mkdir()
    write_file(live / "tools" / "build.js", "console.log(3);\n")  # not served: nothing
    with pytest.raises(TimeoutError):
        stream.next(timeout=1.0)
    assert count_reloads(server) == 0


def test_open_streams_hold_no_thread_and_never_hold_a_reload_back(
    devserve: StartDevserve, live: Path, reload_mode: str, stream_to: OpenStream
) -> None:
    import psutil

    server = start(devserve, live)
    wait_watching(server)
    serving = psutil.Process(serving_process(server))
    threads = serving.num_threads()
    streams = [stream_to(server.port) for _ in range(200)]
    for stream in streams:
        stream.expect("hello")
    assert serving.num_threads() <= threads + 2  # a thread or two of the pool, not 200
    set_version(live, "v1")
    wait_reloads(server, 1)
    assert "200 request(s)" not in server.log  # a drain never waits for them
    serves(server, "/", "v1")
    assert all(stream.ends_within(10) for stream in streams)


@pytest.mark.parametrize("header", ["X-Forwarded-For", "Forwarded", "X-Real-IP"])
def test_what_came_through_a_proxy_is_the_apps_even_from_this_machine(
    devserve: StartDevserve, live: Path, header: str
) -> None:
    """A proxy on this machine connects from loopback for anyone anywhere: a request that
    carries a proxy's header gets the app's answer, and its page no tag. (Other peers than
    loopback, which traffic on loopback cannot be, are fed to the unit tests.)"""
    server = start(devserve, live, "--proxy-mode", "--dev", "reload")
    forwarded = {header: "for=127.0.0.1" if header == "Forwarded" else "127.0.0.1"}
    for path in (EVENTS_PATH, "/__devserve__/status"):
        answer = server.request(path, headers=forwarded)
        assert (answer.status, answer.raw) == (404, "<html><body>none</body></html>")
    assert server.request("/", headers=forwarded).raw == PAGE.format(version="v0")
    assert server.request("/__devserve__/status").status == 200  # without: devserve's


# --- every mode ---


def test_prefork_streams_through_any_worker_get_the_masters_events(
    devserve: StartDevserve, live: Path, stream_to: OpenStream
) -> None:
    server = start(devserve, live, "--workers", "2")
    wait_watching(server)
    streams = [stream_to(server.port) for _ in range(6)]
    images = {stream.expect("hello")["image"] for stream in streams}
    assert images == {image_of(server)}
    source = (live / "liveapp.py").read_text(encoding="utf-8")
    write_file(live / "liveapp.py", source + "\ndef broken(:\n")
    for stream in streams:
        assert stream.expect("error")["file"] == "liveapp.py"
    write_file(live / "liveapp.py", source.replace('VERSION = "v0"', 'VERSION = "v1"'))
    # Not told to reload: the old workers serve on until the new ones are ready.
    assert all(stream.events_to_the_end(10) == [] for stream in streams)
    serves(server, "/", "v1")
    # Through whichever worker, old or new, at once: greeted by the new master.
    assert stream_to(server.port).expect("hello")["image"] not in images


def test_prefork_new_code_that_fails_to_load_is_an_error_event_through_the_old_workers(
    devserve: StartDevserve, live: Path, stream_to: OpenStream, reload_mode: str
) -> None:
    """The previous code's workers serve on; the streams they take reach the new master
    (the socket pair they pass them over is kept across the reload), which tells of the
    failure."""
    server = start(devserve, live, "--workers", "2")
    wait_watching(server)
    source = (live / "liveapp.py").read_text(encoding="utf-8")
    write_file(live / "liveapp.py", source.replace("import gzip", "import gzip\n1 / 0"))
    server.wait_for_log("the workers of the previous code go on serving")
    assert server.request("/").status == 200  # the old code
    stream = stream_to(server.port)  # through an old worker, at once: no retry needed
    # The code serving is the old workers': its id, so their pages do not reload in a loop.
    assert stream.expect("hello")["image"] == image_of(server)
    error = stream.expect("error")
    assert error["message"] == "ZeroDivisionError: division by zero"
    assert (error["file"], error["source"]) == ("liveapp.py", "1 / 0")


def test_gevent_mode_streams(
    devserve: StartDevserve, live: Path, reload_mode: str, stream_to: OpenStream
) -> None:
    server = devserve("gevent", "-p", "0", "--dev", "reload", "liveapp:app", cwd=live)
    wait_watching(server)
    stream = stream_to(server.port)
    image = stream.expect("hello")["image"]
    assert image == image_of(server)
    write_file(live / "static" / "site.css", "p { color: blue; }\n")
    assert stream.expect("css") == {"path": "/static/site.css"}
    set_version(live, "v1")
    assert stream.events_to_the_end(10) == ["reload"]
    serves(server, "/", "v1")
    assert stream_to(server.port).expect("hello")["image"] != image


# --- real projects ---


@pytest.fixture(scope="module")
def django_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return projects.django_project(tmp_path_factory.mktemp("django") / "site")


def test_django_stylesheets_templates_and_the_debugger_page(
    devserve: StartDevserve, django_template: Path, tmp_path: Path, stream_to: OpenStream
) -> None:
    site = Path(shutil.copytree(django_template, tmp_path / "site"))
    server = devserve("-p", "0", "--dev", "reload,werkzeug", "mysite.wsgi:application", cwd=site)
    wait_watching(server)
    page = server.request("/page")
    image = TAG.search(page.raw)
    assert image is not None and 'href="/static/shop/site.css"' in page.raw
    debugger = server.request("/boom")  # the debugger's page reloads itself once fixed
    assert debugger.status == 500 and TAG.search(debugger.raw) is not None
    stream = stream_to(server.port)
    assert stream.expect("hello")["image"] == image.group(1)
    write_file(site / "shop" / "static" / "shop" / "site.css", "p { color: red; }\n")
    assert stream.expect("css") == {"path": "/static/shop/site.css"}
    projects.set_template(site / "shop" / "templates" / "shop" / "page.html", "page v1")
    assert stream.expect("reload") == {}  # re-read by Django: the page reloads, no restart
    write_file(site / "shop" / "static" / "shop" / "app.js", "let a = 1;\n")
    assert stream.expect("reload") == {"paths": ["/static/shop/app.js"]}
    assert count_reloads(server) == 0
    projects.set_version(site / "shop" / "views.py", "v1")
    assert stream.ends_within(15)
    serves(server, "/page", "v1")


def test_flask_and_addon_stylesheets_are_named_by_their_url(
    devserve: StartDevserve, tmp_path: Path, stream_to: OpenStream
) -> None:
    flaskr = projects.flask_project(tmp_path / "flask")
    server = devserve("-p", "0", "--dev", "reload", "flaskr:create_app()", cwd=flaskr)
    addons = tmp_path / "addons"
    write_addon(addons, "shop", files={"static/css/shop.css": "p {}\n"})
    other = devserve("-p", "0", "--dev", "reload", str(addons), cwd=tmp_path)
    wait_watching(server)
    wait_watching(other)
    stream, addon_stream = stream_to(server.port), stream_to(other.port)
    stream.expect("hello")
    addon_stream.expect("hello")
    write_file(flaskr / "flaskr" / "static" / "style.css", "p { color: red; }\n")
    assert stream.expect("css") == {"path": "/static/style.css"}
    write_file(addons / "shop" / "static" / "css" / "shop.css", "p { color: red; }\n")
    assert addon_stream.expect("css") == {"path": "/shop/static/css/shop.css"}
    assert not happens_within(lambda: count_reloads(server) + count_reloads(other), 0.5)
