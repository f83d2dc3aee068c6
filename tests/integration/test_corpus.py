"""The request corpus (``corpus/*.http``, see its README) against every server mode: the
threaded server, prefork workers, gevent mode and prefork's evented child all apply the
same strict request checks (one HTTP engine), so each refuses each request the same way.

Every refused request gets one well-formed answer with ``Connection: close`` (or, for input
that is not HTTP, a clean close), one log line, and never reaches the app (the app,
``apps/recordapp.py``, records what it sees; ``/seen`` tells); nothing after it is served
(``GET /smuggled`` is the canary). One server process per mode for the whole module.
"""

from __future__ import annotations

import codecs
import dataclasses
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devserve._engine.checks import MAX_CHUNK_LINE, MAX_HEAD, MAX_TARGET
from tests.integration.harness import APPS, DevserveProcess, clean_env
from tests.integration.raw import (
    CHUNKED,
    SMUGGLED,
    exchange,
    get_with,
    http,
    log_tail,
    parse_responses,
    post,
    seen,
)

CORPUS = Path(__file__).with_name("corpus")
LIMIT_MIB = 1  # --limit-request-body of every server here
MODES = {
    "threaded": [],
    "prefork": ["--workers", "2"],
    "gevent": ["gevent"],
    "evented-child": ["--workers", "1", "--gevent-port"],  # the port is added at start
}
OPTIONS = {"body", "half-close", "may-close"}


@dataclasses.dataclass(frozen=True)
class Case:
    raw: bytes
    status: tuple[int, ...]  # the answers accepted
    body: bool = False  # the head is valid, the body is not: the app never gets it whole
    half_close: bool = False  # the client shuts its sending side after the request
    may_close: bool = False  # not HTTP: closing without an answer is fine too


def load(path: Path) -> Case:
    """A corpus file: ``# STATUS... [OPTIONS]``, comments, then the escaped request."""
    first, *lines = path.read_text(encoding="ascii").splitlines()
    words = first.removeprefix("#").split()
    options = {word for word in words if not word.isdigit()}
    assert first.startswith("#") and options <= OPTIONS, f"{path.name}: bad first line"
    text = "".join(line for line in lines if not line.startswith("#"))
    return Case(
        codecs.escape_decode(text.encode("ascii"))[0],  # type: ignore[attr-defined]
        tuple(int(word) for word in words if word.isdigit()),
        body="body" in options,
        half_close="half-close" in options,
        may_close="may-close" in options,
    )


def case(raw: bytes, *status: int, id: str, **options: bool) -> Any:
    return pytest.param(Case(raw, status, **options), id=id)


_big_headers = [b"X-Big-%d: %s" % (index, b"v" * 8000) for index in range(MAX_HEAD // 8000 + 1)]
OVER_LIMIT_CHUNK = b"%x\r\n" % ((LIMIT_MIB << 20) + 1) + b"a" * ((LIMIT_MIB << 20) + 1)
# Too big to keep as files: made here.
GENERATED = [
    case(http(b"GET /" + b"a" * MAX_TARGET + b" HTTP/1.1", b"Host: x"), 414, id="target-over-max"),
    case(b"GET /" + b"a" * (MAX_HEAD + 100), 414, id="request-line-over-max-head-unended"),
    case(
        http(b"GET /" + b"a" * (MAX_HEAD + 100) + b" HTTP/1.1", b"Host: x"),
        414,
        id="request-line-over-max-head",
    ),
    case(
        b"GET /" + b"a" * (4 * MAX_HEAD) + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        414,
        id="request-line-far-over-max-head",
    ),
    case(  # the length is in the method: a bad method (400), not a long target (414)
        http(b"A" * (MAX_HEAD + 100) + b" / HTTP/1.1", b"Host: x"),
        400,
        id="request-line-over-max-head-long-method",
        half_close=True,
    ),
    case(get_with(b"Host: x", *_big_headers), 431, id="head-over-max-head"),
    case(get_with(b"Host: x", b"X-Big: " + b"v" * MAX_HEAD), 431, id="one-header-over-max-head"),
    case(
        post(CHUNKED, body=b"5;" + b"x" * 100_000 + b"\r\nhello\r\n0\r\n\r\n"),
        400,
        id="chunk-ext-100-kb",
        body=True,
    ),
    case(
        post(CHUNKED, body=b"5;" + b"x" * MAX_CHUNK_LINE + b"\r\nhello\r\n0\r\n\r\n"),
        400,
        id="chunk-ext-over-max-line",
        body=True,
    ),
    case(
        post(CHUNKED, body=OVER_LIMIT_CHUNK),
        413,
        id="chunked-body-over-limit-half-closed",
        body=True,
        half_close=True,
    ),
]
CASES = [pytest.param(load(path), id=path.stem) for path in sorted(CORPUS.glob("*.http"))]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture(scope="module", params=sorted(MODES))
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DevserveProcess]:
    mode = request.param
    folder = tmp_path_factory.mktemp(f"corpus-{mode}")
    (folder / "home").mkdir()
    port = _free_port()
    args = [*MODES[mode], *([str(port)] if mode == "evented-child" else [])]
    process = DevserveProcess(
        [*args, "-p", "0", "--limit-request-body", str(LIMIT_MIB), "recordapp:app"],
        cwd=APPS,
        log_path=folder / "devserve.log",
        env=clean_env(folder / "home", {"RECORDAPP_LOG": str(folder / "seen.log")}),
    )
    process.mode = mode  # type: ignore[attr-defined]
    try:
        process.wait_ready()
        if mode == "evented-child":  # its port, not the master's workers'
            process.wait_for_log(rf"evented child serving on http://127\.0\.0\.1:{port} ")
            process.port = port
        yield process
    finally:
        process.stop()


def _logged(case: Case, status: int) -> str:
    refused = rf"devserve\.access: \S+ bad request \({status}\): "
    if not case.body:
        return refused
    return rf'(?:{refused}|"POST /echo HTTP/1\.1" {status} )'  # a body the app was reading


@pytest.mark.parametrize("case", [*CASES, *GENERATED])
def test_malformed_request_is_refused(server: DevserveProcess, case: Case) -> None:
    before = seen(server)
    offset = len(server.log)
    reply = exchange(server, case.raw, shut_wr=case.half_close)
    assert reply.end != "timeout", f"neither answered nor closed: {reply.data[:300]!r}"
    if case.may_close and not reply.data:
        assert reply.end == "eof", "closed with a reset, not cleanly"
    else:
        responses = parse_responses(reply.data)
        assert [r.status for r in responses] == [responses[0].status], "more than one answer"
        response = responses[0]
        assert response.status in case.status, response.body
        assert response.headers.get("connection") == "close", response.headers
        server.wait_for_log(_logged(case, response.status), timeout=5, after=offset)
    after = seen(server)
    assert "/smuggled" not in after.text, after.text
    assert after.completed == before.completed, after.text[-300:]  # never a whole request
    if not case.body:
        assert after.entered == before.entered, after.text[-300:]
    assert server.request("/").status == 200, log_tail(server, offset)


def test_request_after_a_refused_pipelined_one_is_not_served(server: DevserveProcess) -> None:
    before = seen(server)
    raw = (
        http(b"GET /first HTTP/1.1", b"Host: x")
        + http(b"GET /second HTTP/1.1", b"Host: x", b"Content-Length: 1e3")
        + SMUGGLED
    )
    reply = exchange(server, raw)
    assert reply.end != "timeout"
    statuses = [r.status for r in parse_responses(reply.data)]
    # A prefork worker closes after each response: the rest is never read.
    assert statuses == ([200] if _closes_after_each(server) else [200, 400]), statuses
    after = seen(server)
    assert after.entered == before.entered + 1
    assert after.text.endswith("GET /first 0\n"), after.text[-300:]


def test_valid_requests_on_the_raw_path_are_served(server: DevserveProcess) -> None:
    """The corpus's near misses: what devserve must keep accepting."""
    before = seen(server)
    accepted = [
        post(b"Content-Length: 5", b"Connection: close", body=b"hello"),
        post(b"Transfer-Encoding: Chunked", b"Connection: close", body=b"5\r\nhello\r\n0\r\n\r\n"),
        post(
            CHUNKED,
            b"Connection: close",
            body=b'5;ext=1 ; q="a \\"b\\"";e\r\nhello\r\n0;last\r\nX-T: 1\r\n\r\n',
        ),
        http(b"POST /echo HTTP/1.0", b"Content-Length: 5", body=b"hello"),
        http(b"GET /" + b"a" * (MAX_TARGET - 1) + b" HTTP/1.1", b"Host: x", b"Connection: close"),
        http(b"OPTIONS * HTTP/1.1", b"Host: x", b"Connection: close"),
        http(b"GET http://x/absolute?q=1 HTTP/1.1", b"Host: x", b"Connection: close"),
        b"\r\n\r\n" + http(b"GET /after-blank-lines HTTP/1.1", b"Host: x", b"Connection: close"),
    ]
    for raw in accepted:
        reply = exchange(server, raw)
        assert reply.end == "eof", raw[:100]
        [response] = parse_responses(reply.data)
        assert response.status == 200, (raw[:100], response.body)
    after = seen(server)
    assert after.completed == before.completed + len(accepted)
    assert "GET /absolute 0\n" in after.text and "GET /after-blank-lines 0\n" in after.text


def test_an_empty_line_before_a_pipelined_request_is_skipped(server: DevserveProcess) -> None:
    raw = (
        http(b"GET /one HTTP/1.1", b"Host: x")
        + b"\r\n"
        + http(b"GET /two HTTP/1.1", b"Host: x", b"Connection: close")
    )
    statuses = [r.status for r in parse_responses(exchange(server, raw).data)]
    assert statuses == ([200] if _closes_after_each(server) else [200, 200]), statuses


def _closes_after_each(server: DevserveProcess) -> bool:
    """Prefork workers close every connection after its response (no keep-alive)."""
    return server.mode == "prefork"  # type: ignore[attr-defined, no-any-return]
