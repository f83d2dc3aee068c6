"""Live reload in the browser (``--dev reload``, unless ``--no-live-reload``): the page follows
the code, and a change refused for a syntax error shows over the page.

The app's side is here:

* the **image id**, new for every process image and every warm serving child, so a page can
  tell whether the code that made it still serves;
* :class:`Injector`, the outermost middleware (in front of the debugger): it serves
  ``/__devserve__/client.js`` and writes ``<script src="/__devserve__/client.js"
  data-image="<id>" defer></script>`` into every HTML page a browser of this machine asks
  for, before its last ``</body>`` (at the end when there is none), with
  ``Content-Length`` fixed. The page carries the id of the code that made it, so a reload
  between the page and its event stream is not missed;
* what the events say: a syntax error or a failed load as file, line, message and source
  (:func:`problem_event`, :func:`failure_event`); a changed stylesheet as its URL
  (:func:`static_url`).

The event stream is the control loop's (:mod:`devserve._engine.devroutes`), never a thread's.
The browser's side is ``livereload.js``.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import traceback
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from devserve import project
from devserve._engine.devroutes import (
    FORWARDING,
    PREFIX,
    DevRoutes,
    is_loopback_client,
    new_image,
)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from devserve.app import Served
    from devserve.config import Settings
    from devserve.frameworks import Integration
    from devserve.reloader import SyntaxProblem
    from devserve.watcher import PathFilter

__all__ = ["CLIENT", "Injector", "Live", "failure_event", "problem_event", "setup", "static_url"]

CLIENT = PREFIX + "client.js"
_MARK = b"</body"
# Files whose change live reload acts on when under a static folder (a stylesheet is
# swapped in place, anything else reloads the page); elsewhere they do nothing.
STATIC_INCLUDE = (
    *("*.css", "*.js", "*.mjs", "*.json", "*.svg", "*.png", "*.jpg", "*.jpeg"),
    *("*.gif", "*.webp", "*.avif", "*.ico", "*.woff", "*.woff2", "*.ttf"),
)


def is_static_name(name: str) -> bool:
    """Whether a file of this name is one live reload watches (see STATIC_INCLUDE)."""
    return _static_names().includes_name(name)


@functools.cache
def _static_names() -> PathFilter:
    from devserve.watcher import PathFilter  # here: the watcher comes after serving

    return PathFilter(STATIC_INCLUDE)


@dataclasses.dataclass
class Live:
    """Live reload for one image: its id, its event streams, the static folders' URLs."""

    image: str
    routes: DevRoutes
    static_urls: list[tuple[str, str]]  # (folder, the URL it is served at), longest first

    def wrap(self, app: WSGIApplication) -> WSGIApplication:
        return Injector(app, self.image)

    def changed(self, static: Iterable[str], refreshed: Iterable[str]) -> None:
        """Files that need no restart: a stylesheet is swapped in place, anything else
        reloads the page (a script, an image: named, for the browser to fetch them anew
        first, as a reload may take them from its cache; a template the framework re-reads
        in place)."""
        static = sorted(static)
        for path in static:
            if path.endswith(".css"):
                self.routes.send("css", {"path": static_url(path, self.static_urls)})
        others = [
            static_url(path, self.static_urls) for path in static if not path.endswith(".css")
        ]
        if others:
            self.routes.send("reload", {"paths": others})
        elif any(True for _ in refreshed):
            self.routes.send("reload", {})

    def refused(self, problems: list[SyntaxProblem]) -> None:
        """A change refused for a syntax error: shown over the page."""
        if problems:
            self.routes.send("error", problem_event(problems[0]))


def setup(
    settings: Settings, served: Served, integration: Integration, serving: str = ""
) -> Live | None:
    """Live reload for this image, when on (``--dev reload``, not ``--no-live-reload``).
    ``serving``: the id of the code that goes on serving instead of this image's (prefork's
    previous workers, when this image's code failed to load); else a new one."""
    if not settings.live_reload:
        return None
    image = serving or new_image()
    error = failure_event(served.failure) if served.failure is not None else None
    urls = [(addon.static_dir, f"/{addon.name}/static/") for addon in served.addons]
    urls += integration.static_urls()
    urls.sort(key=lambda pair: len(pair[0]), reverse=True)
    return Live(image, DevRoutes(image, error), urls)


# --- what the events say ---


def problem_event(problem: SyntaxProblem) -> dict[str, Any]:
    return {
        "file": _shown(problem.path),
        "line": problem.line,
        "message": f"SyntaxError: {problem.message}",
        "source": problem.source,
    }


def failure_event(error: BaseException) -> dict[str, Any]:
    """Why the app failed to load: its syntax error, or the innermost line of the project
    (not of a library) its traceback went through."""
    cause = error.__cause__ or error
    where: str | None
    if isinstance(cause, SyntaxError):
        where, line, source = cause.filename, cause.lineno, (cause.text or "").strip()
    else:
        frames = traceback.extract_tb(cause.__traceback__)
        ours = [f for f in frames if not project.is_library(f.filename)] or frames
        frame = ours[-1] if ours else None
        where = frame.filename if frame else None
        line = frame.lineno if frame else None
        source = (frame.line or "") if frame else ""
    message = f"{type(cause).__name__}: {getattr(cause, 'msg', None) or cause}"
    shown = _shown(where) if where else None
    return {"file": shown, "line": line, "message": message, "source": source}


def _shown(path: str) -> str:
    cwd = os.getcwd()
    return os.path.relpath(path, cwd) if path.startswith(cwd + os.sep) else path


def static_url(path: str, static_urls: Iterable[tuple[str, str]]) -> str:
    """The URL a static file is served at: under the folder of a known URL, else what
    follows its ``static`` folder, under ``/static/``."""
    for folder, prefix in static_urls:
        if project.inside(path, folder):
            return prefix + os.path.relpath(path, folder).replace(os.sep, "/")
    parts = path.split(os.sep)
    if project.STATIC_FOLDER not in parts[:-1]:
        return "/static/" + parts[-1]
    last = len(parts) - 1 - parts[-2::-1].index(project.STATIC_FOLDER) - 1
    return "/static/" + "/".join(parts[last + 1 :])


# --- the middleware ---


class Injector:
    """Serves the client script and writes its tag into HTML pages (see the module)."""

    def __init__(self, app: WSGIApplication, image: str) -> None:
        self.app = app
        self.tag = f'<script src="{CLIENT}" data-image="{image}" defer></script>'.encode()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        if environ.get("PATH_INFO") == CLIENT and method in ("GET", "HEAD"):
            return _client(method, start_response)
        if not _for_a_page(environ):
            return self.app(environ, start_response)
        splice = _Splice(self.tag)

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            write = start_response(status, splice.decide(status, headers), exc_info)
            if not splice.active or method == "HEAD":
                return write
            return lambda data: write(splice.feed(data))

        body = self.app(environ, start)
        if method == "HEAD" or (splice.decided and not splice.active):
            return body  # as it is: a file, a stream, JSON... (HEAD: the headers only)
        return _SplicedBody(body, splice)


def _for_a_page(environ: WSGIEnvironment) -> bool:
    """A request for a page this machine's browser shows: not a fetch, an XHR or a frame's
    (``Sec-Fetch-Dest``; a fragment an htmx swap inserts is no page), from a loopback peer
    (the socket's), not through a proxy: a browser elsewhere could not open the stream."""
    destination = environ.get("HTTP_SEC_FETCH_DEST", "document")
    peer = environ.get("devserve.peer", environ.get("REMOTE_ADDR"))
    proxied = any(
        f"HTTP_{name.decode().upper().replace('-', '_')}" in environ for name in FORWARDING
    )
    return destination == "document" and is_loopback_client(str(peer)) and not proxied


def _client(method: str, start_response: StartResponse) -> list[bytes]:
    script = _client_script()
    start_response(
        "200 OK",
        [
            ("Content-Type", "text/javascript; charset=utf-8"),
            ("Content-Length", str(len(script))),
            ("Cache-Control", "no-cache"),
        ],
    )
    return [] if method == "HEAD" else [script]


@functools.cache
def _client_script() -> bytes:
    with open(os.path.join(os.path.dirname(__file__), "livereload.js"), "rb") as file:
        return file.read()


class _Splice:
    """Where the tag goes in one response: decided from its status and headers, then found
    in its body as it passes: before the last ``</body`` (an earlier one may be in a
    script's string), held back from each ``</body`` until the body ends or another one
    comes; only a tail that may begin ``</body`` is held back otherwise."""

    def __init__(self, tag: bytes) -> None:
        self.tag = tag
        self.decided = self.active = False
        self.held = b""  # not sent yet: from the last ``</body`` on, or what may begin one

    def decide(self, status: str, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
        """The headers to send: an HTML page's without its validators (a 304 would bring
        back a page of older code) and with its length grown by the tag's. Called again
        (``exc_info``: an error page instead), it starts over."""
        self.decided, self.held = True, b""
        self.active = _injects(status, {name.lower(): value for name, value in headers})
        if not self.active:
            return headers
        sent = []
        for name, value in headers:
            lower = name.lower()
            if lower in ("etag", "last-modified"):
                continue
            if lower == "content-length":
                if not value.strip().isdigit():
                    continue
                value = str(int(value) + len(self.tag))
            sent.append((name, value))
        return sent

    def feed(self, data: bytes) -> bytes:
        if not self.active:
            return data
        data = self.held + data
        lower = data.lower()
        at = lower.rfind(_MARK)
        if at < 0:  # hold back only what may be the start of one
            at = next(
                (len(data) - k for k in range(len(_MARK) - 1, 0, -1) if lower.endswith(_MARK[:k])),
                len(data),
            )
        self.held = data[at:]
        return data[:at]

    def finish(self) -> bytes:
        """The body's end: the tag before the last ``</body`` (at the end when none came)."""
        if not self.active:
            return b""
        held, self.held = self.held, b""
        if held.lower().startswith(_MARK):
            return self.tag + held
        return held + self.tag


def _injects(status: str, headers: dict[str, str]) -> bool:
    """An HTML page with a body the browser shows: not compressed, nor a download, nor a
    part, nor a redirect, nor without a body."""
    try:
        code = int(status.split(None, 1)[0])
    except ValueError:
        return False
    if code < 200 or 300 <= code < 400 or code in (204, 206):
        return False
    media, _, parameters = headers.get("content-type", "").partition(";")
    if media.strip().lower() != "text/html" or "utf-16" in parameters.lower():
        return False
    encoding = headers.get("content-encoding", "identity").strip().lower()
    return (
        encoding == "identity"
        and "attachment" not in headers.get("content-disposition", "").lower()
    )


class _SplicedBody:
    """The app's body with the tag written in (and the app's ``close()`` kept)."""

    def __init__(self, body: Iterable[bytes], splice: _Splice) -> None:
        self.body = body
        self.splice = splice

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self.body:
            out = self.splice.feed(chunk)
            if out:
                yield out
        end = self.splice.finish()
        if end:
            yield end

    def close(self) -> None:
        close = getattr(self.body, "close", None)
        if close is not None:
            close()
