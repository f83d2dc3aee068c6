"""A WSGI app with one @cached and one functools.lru_cache function, for USR1/USR2 tests.

/square?n=N   -> N*N through @cached square()  (n=list passes an unhashable list)
/cube?n=N     -> N**3 through lru_cache cube()
"""

import functools
from urllib.parse import parse_qs

from devserve import cached


@cached
def square(number):
    return number[0] * number[0] if isinstance(number, list) else number * number


@cached
def big(count):
    return [[index] for index in range(count)]


@functools.lru_cache(maxsize=32)
def cube(number):
    return number**3


def app(environ, start_response):
    query = parse_qs(environ.get("QUERY_STRING", ""))
    raw = query.get("n", ["0"])[0]
    if environ["PATH_INFO"] == "/big":
        body = str(len(big(300_000)))
    elif environ["PATH_INFO"] == "/cube":
        body = str(cube(int(raw)))
    else:
        body = str(square([2] if raw == "list" else int(raw)))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body.encode()]
