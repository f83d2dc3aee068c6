"""Real projects: devserve against the frameworks' own dev servers, side by side in one run.

On a stock Django project (``django-admin startproject mysite`` with an app ``shop`` beside
the settings package, using the admin and Django REST framework) and on a Flask factory
package (``flaskr``, as Flask's tutorial), both built by ``tests/projects.py`` in a
temporary folder, each server gets its own copy of the project and is started the way its
documentation says, on 127.0.0.1:

* django/devserve: ``python -m devserve -p PORT --dev reload,werkzeug mysite.wsgi:application``
  (warm reloads, the default)
* django/devserve-exec: the same with ``--reload-mode exec``
* django/gunicorn: ``python -m gunicorn --reload -w 1 -b 127.0.0.1:PORT mysite.wsgi:application``
* django/uvicorn: ``python -m uvicorn --interface wsgi --reload --port PORT`` with the same
  target
* django/runserver: ``python manage.py runserver 127.0.0.1:PORT``
* flask/devserve: ``python -m devserve -p PORT --dev reload,werkzeug 'flaskr:create_app()'``
* flask/flask-run: ``python -m flask --app 'flaskr:create_app()' run --debug -p PORT``

``flask run --debug`` runs with Werkzeug's stat reloader, as it does in an environment
without watchdog (devserve no longer brings watchdog on Linux): with watchdog 7 installed,
Werkzeug's watchdog reloader loops on "Inotify queue overflowed" and never reloads (the
``flask-run-watchdog`` server shows it; not run by default). The benchmark hides watchdog from
flask with a ``PYTHONPATH`` folder holding a ``watchdog`` package that fails to import.

Measured per server, ``--edits`` times each (at least 8):

* views edit: rewrite the ``VERSION`` line of the views module (in place, growing the file by a
  byte), then poll ``/version`` on a new connection every 5 ms: the time from the start of the
  write to the first answer carrying the new version;
* template edit: rewrite the page template (``shop/page.html``, ``page.html``) and poll
  ``/page`` the same way;
* missed: an edit not served within 10 s (the series goes on).

The next edit waits until the previous one is served, plus 0.3 s (not part of any figure).
Run with the Python of a virtualenv with devserve and its test extra::

    pip install -e '.[test]'
    python benchmarks/frameworks.py [--edits 8] [--servers django/devserve,django/runserver]

Prints a table (with the resident memory of each process after the edits: devserve's warm
parent, then its serving child) and the ratios devserve / peer of the views-edit p50. Exits 0
whatever the figures; 1 when devserve could not be measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import http.client
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil  # a dependency of devserve
from processes import HOST, free_port, spawn, stop
from reload import percentile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests import projects  # the projects the integration tests build

READY_TIMEOUT = 60.0
EDIT_TIMEOUT = 10.0  # an edit not served by then is missed
POLL_INTERVAL = 0.005
EDIT_SPACING = 0.3
MIN_EDITS = 8


@dataclasses.dataclass(frozen=True)
class Server:
    name: str  # project/server
    project: str  # "django" or "flask"
    command: Callable[[int], list[str]]
    hide_watchdog: bool = False

    @property
    def is_devserve(self) -> bool:
        return self.name.endswith("/devserve")  # warm reloads (devserve-exec: a peer here)


def devserve(target: str) -> Callable[[int], list[str]]:
    return lambda port: [
        sys.executable,
        *("-m", "devserve", "-p", str(port), "--dev", "reload,werkzeug", target),
    ]


def devserve_exec(target: str) -> Callable[[int], list[str]]:
    return lambda port: [*devserve(target)(port)[:-1], "--reload-mode", "exec", target]


def gunicorn(target: str) -> Callable[[int], list[str]]:
    return lambda port: [
        sys.executable,
        *("-m", "gunicorn", "--reload", "-w", "1", "-b", f"{HOST}:{port}", target),
    ]


def uvicorn(target: str) -> Callable[[int], list[str]]:
    return lambda port: [
        sys.executable,
        *("-m", "uvicorn", "--interface", "wsgi", "--reload"),
        *("--host", HOST, "--port", str(port), target),
    ]


def runserver(port: int) -> list[str]:
    return [sys.executable, "manage.py", "runserver", f"{HOST}:{port}"]


def flask_run(port: int) -> list[str]:
    return [
        sys.executable,
        *("-m", "flask", "--app", "flaskr:create_app()", "run", "--debug"),
        *("-h", HOST, "-p", str(port)),
    ]


SERVERS = {
    server.name: server
    for server in (
        Server("django/devserve", "django", devserve("mysite.wsgi:application")),
        Server("django/devserve-exec", "django", devserve_exec("mysite.wsgi:application")),
        Server("django/gunicorn", "django", gunicorn("mysite.wsgi:application")),
        Server("django/uvicorn", "django", uvicorn("mysite.wsgi:application")),
        Server("django/runserver", "django", runserver),
        Server("flask/devserve", "flask", devserve("flaskr:create_app()")),
        Server("flask/flask-run", "flask", flask_run, hide_watchdog=True),
        Server("flask/flask-run-watchdog", "flask", flask_run),
    )
}
DEFAULT_SERVERS = (
    "django/devserve",
    "django/devserve-exec",
    "django/gunicorn",
    "django/uvicorn",
    "django/runserver",
    "flask/devserve",
    "flask/flask-run",
)
# What each edit rewrites, relative to the project folder.
VIEWS = {"django": "shop/views.py", "flask": "flaskr/views.py"}
TEMPLATE = {"django": "shop/templates/shop/page.html", "flask": "flaskr/templates/page.html"}


@dataclasses.dataclass
class Result:
    server: Server
    views: list[float | None] = dataclasses.field(default_factory=list)  # None: missed
    templates: list[float | None] = dataclasses.field(default_factory=list)
    error: str = ""
    # Resident memory after the edits, MiB: the process started and each process under it
    # (devserve warm: the warm parent, then its serving child).
    rss: list[float] = dataclasses.field(default_factory=list)


def served(port: int, path: str, text: str) -> bool:
    connection = http.client.HTTPConnection(HOST, port, timeout=2.0)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        return response.status == 200 and text in response.read().decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def wait_served(port: int, path: str, text: str, timeout: float) -> float | None:
    """Seconds until ``path`` serves ``text``, or None after ``timeout``."""
    started = time.perf_counter()
    while time.perf_counter() - started < timeout:
        if served(port, path, text):
            return time.perf_counter() - started
        time.sleep(POLL_INTERVAL)
    return None


def timed_edit(port: int, edit: Callable[[], None], path: str, text: str) -> float | None:
    started = time.perf_counter()
    edit()
    seen = wait_served(port, path, text, EDIT_TIMEOUT)
    return None if seen is None else time.perf_counter() - started


def hidden_watchdog(folder: Path) -> Path:
    """A folder to put first on PYTHONPATH: its ``watchdog`` fails to import."""
    package = folder / "watchdog"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text('raise ImportError("hidden by the benchmark")\n')
    return folder


def measure(server: Server, built: Path, scratch: Path, edits: int) -> Result:
    result = Result(server)
    folder = scratch / server.name.replace("/", "-")
    shutil.copytree(built, folder)
    home = scratch / "home"
    home.mkdir(exist_ok=True)
    port = free_port()
    env_extra = {}
    if server.hide_watchdog:
        env_extra["PYTHONPATH"] = str(hidden_watchdog(scratch / "no-watchdog"))
    with open(scratch / f"{folder.name}.log", "wb") as log:
        process = spawn(server.command(port), folder, home, log, env_extra)
        try:
            if wait_served(port, "/version", "v0", READY_TIMEOUT) is None:
                result.error = f"not serving /version within {READY_TIMEOUT:g}s"
                return result
            views, template = folder / VIEWS[server.project], folder / TEMPLATE[server.project]
            for number in range(1, edits + 1):
                version = f"v{number}"
                edit = functools.partial(projects.set_version, views, version)
                result.views.append(timed_edit(port, edit, "/version", version))
                time.sleep(EDIT_SPACING)
            for number in range(1, edits + 1):
                content = f"page t{number}"
                edit = functools.partial(projects.set_template, template, content)
                result.templates.append(timed_edit(port, edit, "/page", content))
                time.sleep(EDIT_SPACING)
            result.rss = resident_mib(process.pid)
        finally:
            stop(process)
    return result


def resident_mib(pid: int) -> list[float]:
    """RSS of ``pid`` and of every process under it, in MiB."""
    try:
        top = psutil.Process(pid)
        tree = [top, *top.children(recursive=True)]
        return [process.memory_info().rss / 2**20 for process in tree]
    except psutil.Error:
        return []


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f}"


def summary(values: list[float | None]) -> tuple[float | None, float | None, int]:
    seen = [value for value in values if value is not None]
    return percentile(seen, 0.5), (max(seen) if seen else None), len(values) - len(seen)


def report(results: list[Result]) -> None:
    print(
        f"{'server':<26} {'views p50':>9} {'max':>6} {'missed':>6}   "
        f"{'template p50':>12} {'max':>6} {'missed':>6}   (ms)   RSS MiB, each process"
    )
    for result in results:
        if result.error:
            print(f"{result.server.name:<26} {result.error}")
            continue
        v50, vmax, vmissed = summary(result.views)
        t50, tmax, tmissed = summary(result.templates)
        print(
            f"{result.server.name:<26} {ms(v50):>9} {ms(vmax):>6} {vmissed:>6}   "
            f"{ms(t50):>12} {ms(tmax):>6} {tmissed:>6}        "
            + " + ".join(f"{mib:.0f}" for mib in result.rss)
        )
    print()
    for result in results:
        if not result.server.is_devserve or result.error:
            continue
        ours = summary(result.views)[0]
        for peer in results:
            same_project = peer.server.project == result.server.project
            if peer is result or not same_project or peer.error:
                continue
            theirs = summary(peer.views)[0]
            if ours is not None and theirs:
                print(
                    f"views edit p50, {result.server.name} / {peer.server.name}: "
                    f"{ours / theirs:.2f}"
                )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--edits", type=int, default=MIN_EDITS, help="edits of each kind")
    parser.add_argument(
        "--servers",
        default=",".join(DEFAULT_SERVERS),
        help=f"comma-separated, of: {', '.join(SERVERS)}",
    )
    options = parser.parse_args()
    chosen = [SERVERS[name] for name in options.servers.split(",") if name]
    with tempfile.TemporaryDirectory(prefix="devserve-frameworks-bench-") as temp:
        scratch = Path(temp)
        built = {
            "django": projects.django_project(scratch / "built" / "django"),
            "flask": projects.flask_project(scratch / "built" / "flask"),
        }
        results = []
        for server in chosen:
            print(f"measuring {server.name}...", file=sys.stderr)
            results.append(measure(server, built[server.project], scratch, options.edits))
        report(results)
    devserve_failed = any(r.server.is_devserve and r.error for r in results)
    return 1 if devserve_failed else 0


if __name__ == "__main__":
    sys.exit(main())
