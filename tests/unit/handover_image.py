"""Two images of one process, for the hand-over round trip in ``test_reloader``.

The first image binds a listen socket and an evented socket, prints their ports, accepts one
connection and reads the start of its request, makes a heartbeat pipe with bytes in it, and
re-execs with all of it. The next image decodes the hand-over and reports what it found, as
one line of JSON, over that very connection; then it serves one more connection on the
listen socket it adopted.
"""

from __future__ import annotations

import json
import os
import socket

from devserve import reloader


def first_image() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    evented = socket.create_server(("127.0.0.1", 0))
    ports = {"pid": os.getpid(), "port": listener.getsockname()[1]}
    print(json.dumps({**ports, "evented_port": evented.getsockname()[1]}), flush=True)
    listener.settimeout(10)
    connection, _ = listener.accept()
    received = connection.recv(100)
    read_end, write_end = os.pipe()
    os.write(write_end, b"r.")  # the write end is not handed over: the next image reads EOF
    # Live reload's channel: a stream a worker passed meanwhile waits in it for the next.
    channel = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    socket.send_fds(channel[1], [b"/__devserve__/events"], [connection.fileno()])
    handover = reloader.Handover(
        listener=listener,
        reload=reloader.Reload("shop/models.py and 2 more", 1.5, 2.5),
        connections=[(connection, received)],
        workers=[reloader.HandedWorker(4242, 2, read_end)],
        evented=reloader.HandedChildren(evented, (4343, 4444)),
        own_channel=channel,
        image="1a2b-c3d4e5f6",
        watched=["/src/extra", "/src/more"],
        debugger_failures=7,
    )
    reloader.reexec(handover)


def next_image() -> None:
    handover = reloader.Handover.decode()
    assert handover.listener is not None and handover.evented is not None
    [(connection, received)] = handover.connections
    [worker] = handover.workers
    reload = handover.reload
    assert reload is not None and handover.own_channel is not None
    target, passed, _, _ = socket.recv_fds(handover.own_channel[0], 100, 1)
    for fd in passed:
        os.close(fd)
    found = {
        "pid": os.getpid(),
        "port": handover.listener.getsockname()[1],
        "descriptors": [
            handover.listener.fileno(),
            connection.fileno(),
            worker.heartbeat,
            handover.evented.sock.fileno(),
            *(end.fileno() for end in handover.own_channel),
        ],
        "open": sorted(int(fd) for fd in os.listdir("/proc/self/fd")),
        "inheritable": [os.get_inheritable(fd) for fd in range(3, 9)],
        "received": received.decode(),
        "worker": [worker.pid, worker.number],
        "heartbeat": os.read(worker.heartbeat, 10).decode(),
        "evented": [handover.evented.sock.getsockname()[1], list(handover.evented.pids)],
        "watched": handover.watched,
        "debugger_failures": handover.debugger_failures,
        "own_channel": [target.decode(), len(passed)],
        "image": handover.image,
        "reload": [reload.cause, reload.first_seen, reload.decided, reload.exec_at > 0],
        "left_in_environment": sorted(
            name for name in os.environ if name.startswith(("LISTEN_", "DEVSERVE_HANDOVER"))
        ),
    }
    connection.sendall(json.dumps(found).encode() + b"\n")
    connection.close()
    handover.listener.settimeout(10)
    another, _ = handover.listener.accept()
    another.sendall(b"the next image accepts\n")
    another.close()


if __name__ == "__main__":
    if reloader.HANDOVER_ENV in os.environ:
        next_image()
    else:
        first_image()
