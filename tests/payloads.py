"""Hostile XML-RPC bodies, shared by the unit and the integration tests of devserve.rpc."""

# "Billion laughs": nine levels of ten references each, 10^9 "lol" once expanded (3 GB).
BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
    + b"".join(
        b'<!ENTITY lol%d "%s">\n' % (n, (b"&lol%d;" % (n - 1) if n > 1 else b"&lol;") * 10)
        for n in range(1, 10)
    )
    + b"]>\n<methodCall><methodName>count</methodName><params><param><value>"
    + b"<string>&lol9;</string></value></param></params></methodCall>"
)

# An external entity: a parser that resolved it would put /etc/passwd in the argument.
EXTERNAL_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    b"<methodCall><methodName>count</methodName><params><param><value><string>&e;"
    b"</string></value></param></params></methodCall>"
)
