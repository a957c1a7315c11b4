"""What a run and its supervisor say to each other: messages in, replies out."""

from __future__ import annotations

import json
import os
import pickle
import socket

import pytest

from netaudit import protocol
from netaudit.model import TraceStats
from netaudit.protocol import (
    Ask,
    Bye,
    Channel,
    Finish,
    Hello,
    RunAudit,
    TableEntry,
    Welcome,
    decode,
    encode,
    reply,
)

RUN = "0123456789abcdef"
AUDIT = RunAudit(destinations=(), stats=TraceStats(lines=3), problem="")


@pytest.mark.parametrize(
    "message",
    [
        Hello(RUN, "gw0", 42, True, "", {"allowlist": "/p/netaudit.yaml", "verbose": False}),
        Hello(RUN, audit=False, reason="--collect-only"),
        TableEntry(RUN, "", 3, "t.py::a[1]", "t.py:9", {"allow": ["10.0.0.5:5432"]}),
        TableEntry(RUN, "gw1", 0, "t.py::b", ""),
        Ask(RUN, "gw0", 7),
        Finish(RUN),
        Bye(),
    ],
)
def test_every_message_comes_back_as_it_was_sent(message: protocol.Message) -> None:
    line = encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode(line) == message


@pytest.mark.parametrize(
    "line",
    [
        b"",
        b"not json\n",
        b"[1, 2]\n",
        b'{"op": "launch"}\n',
        b'{"run": "r"}\n',
        b'{"op": "test", "run": "r", "worker": "", "test": "0", "nodeid": "t.py::a"}\n',
        b'{"op": "test", "run": "r", "worker": "", "test": 0}\n',
        b'{"op": "test", "run": "r", "worker": 0, "test": 0, "nodeid": "t.py::a"}\n',
        b'{"op": "test", "worker": "", "test": 0, "nodeid": "t.py::a"}\n',
        b'{"op": "test", "run": "r", "worker": "", "test": 0, "nodeid": "a", "location": 3}\n',
        b'{"op": "hello", "run": "r", "audit": "yes"}\n',
        b'{"op": "finish", "run": "r", "extra": 1}\n',
    ],
)
def test_anything_that_is_not_a_message_is_none(line: bytes) -> None:
    assert decode(line) is None


def peer() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


def channel_on(sock: socket.socket) -> Channel:
    """A Channel over one end of a socketpair (Channel() itself connects to a token)."""
    channel = Channel.__new__(Channel)
    channel._sock = sock
    st = os.fstat(sock.fileno())
    channel._identity = (st.st_dev, st.st_ino)
    channel._outbox = []
    channel._pending = 0
    return channel


def test_a_request_sends_what_is_batched_first_and_reads_one_reply() -> None:
    ours, theirs = peer()
    with ours, theirs:
        channel = channel_on(ours)
        channel.send(TableEntry(RUN, "", 0, "t.py::a"), batch=True)
        theirs.sendall(reply(AUDIT))
        assert channel.request(Finish(RUN), RunAudit) == AUDIT
        sent = theirs.recv(65536).splitlines()
    assert [decode(line) for line in sent] == [TableEntry(RUN, "", 0, "t.py::a"), Finish(RUN)]


def test_a_reply_of_another_kind_is_refused() -> None:
    ours, theirs = peer()
    with ours, theirs:
        theirs.sendall(reply(Welcome(1, "/usr/bin/strace", "6.1", True)))
        with pytest.raises(ValueError, match="Welcome"):
            channel_on(ours).request(Finish(RUN), RunAudit)


def test_a_supervisor_that_hangs_up_midway_is_a_connection_error() -> None:
    ours, theirs = peer()
    with ours:
        with theirs:
            theirs.sendall(reply(AUDIT)[:-1])
        with pytest.raises(ConnectionError):
            channel_on(ours).request(Finish(RUN), RunAudit)


def test_a_channel_whose_number_now_names_another_file_never_writes_there(
    tmp_path: os.PathLike[str],
) -> None:
    """A test closed every descriptor (os.closerange) and opened a file of its own, which
    took the channel's number."""
    ours, theirs = peer()
    channel = channel_on(ours)
    number = ours.fileno()
    os.close(number)  # behind the socket object's back, as closerange does
    theirs.close()
    path = os.path.join(tmp_path, "reused")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        assert fd == number
        with pytest.raises(ConnectionError):
            channel.send(Bye())
    finally:
        ours.detach()
        os.close(fd)
    assert os.path.getsize(path) == 0


def test_replies_are_length_prefixed_pickles() -> None:
    data = reply(AUDIT)
    assert int.from_bytes(data[:8], "big") == len(data) - 8
    assert pickle.loads(data[8:]) == AUDIT


def test_a_message_line_is_plain_json_with_its_op() -> None:
    assert json.loads(encode(Ask(RUN, "", 2))) == {"op": "ask", "run": RUN, "worker": "", "test": 2}
