"""Where in the code: the audit hook's records, their keys, and how they join the audit.

These run the hook in this very process (hooks cannot be removed; each recorder is closed,
which leaves a set lookup behind). Sockets here are UDP connect()s, which send nothing, or
loopback.
"""

from __future__ import annotations

import contextlib
import functools
import json
import marshal
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from netaudit import markers
from netaudit.markers import MarkVerb
from netaudit.model import SESSION, Destination, Endpoint, Verdict
from netaudit.pytest_plugin import where as where_module
from netaudit.pytest_plugin.where import MAX_SITES, WhereRecorder, target_of

ROOT = Path(__file__).resolve().parents[2]
HERE = "tests/unit/test_where.py"
NODE = "tests/unit/test_where.py::test_x"


def line_of(text: str) -> int:
    lines = Path(__file__).read_text(encoding="utf-8").splitlines()
    return next(n for n, line in enumerate(lines, start=1) if line.strip().startswith(text))


def udp_connect(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.connect_ex((host, port))  # the helper's line


@pytest.fixture
def recorder() -> Iterator[WhereRecorder]:
    where = WhereRecorder(ROOT)
    yield where
    where.close()


def dest(test: str, ip: str, port: int, pids: tuple[int, ...] = ()) -> Destination:
    return Destination(
        test=test,
        endpoint=Endpoint("AF_INET", ip, port),
        raw="",
        verdict=Verdict(None),
        count=1,
        pids=pids or (os.getpid(),),
        programs=("python3",),
        syscalls=("connect",),
        results=(("0", 1),),
    )


def sites(recorder: WhereRecorder, test: str, ip: str, port: int) -> tuple[str, ...]:
    (attached,) = recorder.attach([dest(test, ip, port)])
    return attached.where


def test_a_call_from_a_helper_shows_the_test_frame_then_the_helper(
    recorder: WhereRecorder,
) -> None:
    def test_x() -> None:
        udp_connect("192.0.2.1", 53)  # the test's line

    recorder.begin(NODE, test_x)
    test_x()
    recorder.end()
    test_line, helper_line = line_of('udp_connect("192.0.2.1", 53)'), line_of("s.connect_ex(")
    assert sites(recorder, NODE, "192.0.2.1", 53) == (
        f"{HERE}:{test_line} in test_x > {HERE}:{helper_line} in udp_connect",
    )


def test_a_call_in_the_test_itself_shows_one_frame(recorder: WhereRecorder) -> None:
    def test_x() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect_ex(("192.0.2.2", 53))  # direct

    recorder.begin(NODE, test_x)
    test_x()
    line = line_of('s.connect_ex(("192.0.2.2", 53))')
    assert sites(recorder, NODE, "192.0.2.2", 53) == (f"{HERE}:{line} in test_x",)


def test_standard_library_frames_are_skipped(recorder: WhereRecorder) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]

        def test_x() -> None:
            socket.create_connection(("127.0.0.1", port)).close()  # via socket.py

        recorder.begin(NODE, test_x)
        test_x()
    line = line_of('socket.create_connection(("127.0.0.1", port))')
    assert sites(recorder, NODE, "127.0.0.1", port) == (f"{HERE}:{line} in test_x",)


def test_calls_outside_a_test_belong_to_the_session(recorder: WhereRecorder) -> None:
    udp_connect("192.0.2.3", 53)
    found = sites(recorder, SESSION, "192.0.2.3", 53)
    assert found == (f"{HERE}:{line_of('s.connect_ex(')} in udp_connect",)
    assert sites(recorder, NODE, "192.0.2.3", 53) == ()


def test_records_join_only_their_own_test_pid_and_destination(recorder: WhereRecorder) -> None:
    def test_x() -> None:
        udp_connect("192.0.2.4", 53)

    recorder.begin(NODE, test_x)
    test_x()
    recorder.end()
    assert sites(recorder, NODE, "192.0.2.4", 53)
    assert sites(recorder, "other::test", "192.0.2.4", 53) == ()
    assert sites(recorder, NODE, "192.0.2.4", 54) == ()
    (other_pid,) = recorder.attach([dest(NODE, "192.0.2.4", 53, pids=(os.getpid() + 1,))])
    assert other_pid.where == ()


def test_a_thread_of_the_test_is_recorded_under_the_test(recorder: WhereRecorder) -> None:
    def test_x() -> None:
        thread = threading.Thread(target=udp_connect, args=("192.0.2.5", 53))
        thread.start()
        thread.join()

    recorder.begin(NODE, test_x)
    test_x()
    # No test frame on the thread's stack: the innermost project frame is what there is.
    assert sites(recorder, NODE, "192.0.2.5", 53) == (
        f"{HERE}:{line_of('s.connect_ex(')} in udp_connect",
    )


def test_a_host_name_is_matched_by_port_when_no_address_matched(
    recorder: WhereRecorder,
) -> None:
    def test_x() -> None:
        udp_connect("localhost", 5353)

    recorder.begin(NODE, test_x)
    test_x()
    assert sites(recorder, NODE, "127.0.0.1", 5353)
    assert sites(recorder, NODE, "127.0.0.1", 5354) == ()


def test_sendto_and_sendmsg_are_recorded(recorder: WhereRecorder) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"x", ("127.0.0.1", 9))  # sendto
        s.sendmsg([b"x"], [], 0, ("127.0.0.1", 19))  # sendmsg
    assert sites(recorder, SESSION, "127.0.0.1", 9) == (
        f"{HERE}:{line_of('s.sendto(')} in test_sendto_and_sendmsg_are_recorded",
    )
    assert sites(recorder, SESSION, "127.0.0.1", 19) == (
        f"{HERE}:{line_of('s.sendmsg(')} in test_sendto_and_sendmsg_are_recorded",
    )


def test_netaudits_own_markers_are_not_recorded(recorder: WhereRecorder) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.connect_ex(markers.address("0123456789abcdef", MarkVerb.END))
    assert recorder.export() == []


def test_a_closed_recorder_records_nothing(recorder: WhereRecorder) -> None:
    recorder.close()
    udp_connect("192.0.2.6", 53)
    assert recorder.export() == []


def test_one_destination_keeps_at_most_max_sites(recorder: WhereRecorder) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(2):
            for n in range(MAX_SITES + 3):
                code = "\n" * n + "s.connect_ex(('192.0.2.7', 53))"  # a new line each time
                exec(compile(code, str(ROOT / "generated.py"), "exec"), {"s": s})
    found = sites(recorder, SESSION, "192.0.2.7", 53)
    assert len(found) == MAX_SITES


def test_export_is_marshallable_and_add_restores_it(recorder: WhereRecorder) -> None:
    udp_connect("192.0.2.8", 53)
    exported = recorder.export()
    controller = WhereRecorder(ROOT)
    controller.close()
    controller.add(marshal.loads(marshal.dumps(exported)))
    controller.add([["junk"], "junk", [1, 2, 3, 4, 5, 6, "sites"]])  # ignored
    assert sites(controller, SESSION, "192.0.2.8", 53) == sites(recorder, SESSION, "192.0.2.8", 53)


@pytest.mark.parametrize(
    ("family", "address", "expected"),
    [
        (socket.AF_INET, ("192.0.2.1", 80), (("AF_INET", "192.0.2.1", 80), False)),
        (socket.AF_INET6, ("2001:db8::1", 80, 0, 0), (("AF_INET6", "2001:db8::1", 80), False)),
        (socket.AF_INET6, ("::ffff:192.0.2.1", 80), (("AF_INET", "192.0.2.1", 80), False)),
        (socket.AF_INET6, ("fe80::1%lo", 80, 0, 1), (("AF_INET6", "fe80::1", 80), False)),
        (socket.AF_INET6, ("2001:DB8::0:1", 80), (("AF_INET6", "2001:db8::1", 80), False)),
        (socket.AF_INET, ("example.invalid", 443), (("AF_INET", "example.invalid", 443), True)),
        (socket.AF_UNIX, "/run/x.sock", (("AF_UNIX", "/run/x.sock", None), False)),
        (socket.AF_UNIX, b"/run/x.sock", (("AF_UNIX", "/run/x.sock", None), False)),
        (socket.AF_UNIX, b"\0name", (("AF_UNIX", "@name", None), False)),
        (socket.AF_UNIX, "\0name", (("AF_UNIX", "@name", None), False)),
        (socket.AF_NETLINK, (0, 0), (("AF_NETLINK", "pid=0", None), False)),
        (socket.AF_INET, ("192.0.2.1", "http"), None),
        (socket.AF_PACKET, ("lo", 0), None),
    ],
)
def test_addresses_are_named_as_the_trace_names_them(
    family: int, address: object, expected: object
) -> None:
    assert target_of(family, address) == expected


# -- how reports show it -------------------------------------------------------------------


def test_reports_show_where_below_each_destination() -> None:
    from netaudit.model import AuditResult, RunInfo
    from netaudit.render import text
    from netaudit.render.json import to_json

    site = "tests/test_api.py:42 in test_fetch > tests/helpers.py:7 in get"
    d = replace(dest(NODE, "192.0.2.9", 443, pids=(12345,)), where=(site,))
    result = AuditResult((d,))
    block = text.violations_block(result).splitlines()
    assert block[5:8] == [
        "    AF_INET 192.0.2.9:443 (count=1, pids=[12345])",
        "      by python3: connect -> connected",
        f"      at {site}",
    ]
    table = text.verbose_table(result.destinations).splitlines()
    row = next(n for n, line in enumerate(table) if line.startswith("AF_INET"))
    assert table[row + 1] == f"{'':<12} at {site}"
    run = RunInfo(started="now", host="h", netaudit_version="0")
    assert json.loads(to_json(result, run))["destinations"][0]["where"] == [site]


def test_a_function_nested_in_the_test_is_not_taken_for_the_test(
    recorder: WhereRecorder,
) -> None:
    def test_x() -> None:
        def inner() -> None:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect_ex(("192.0.2.11", 53))  # nested

        inner()  # calls the nested function

    recorder.begin(NODE, test_x)
    test_x()
    own, nested = line_of("inner()  # calls"), line_of('s.connect_ex(("192.0.2.11", 53))')
    assert sites(recorder, NODE, "192.0.2.11", 53) == (
        f"{HERE}:{own} in test_x > {HERE}:{nested} in inner",
    )


def test_a_decorated_test_is_found_through_its_wrapper(recorder: WhereRecorder) -> None:
    def wrap(function: Callable[[], None]) -> Callable[[], None]:
        @functools.wraps(function)
        def wrapper() -> None:
            function()

        return wrapper

    @wrap
    def test_x() -> None:
        udp_connect("192.0.2.12", 53)  # decorated

    recorder.begin(NODE, test_x)
    test_x()
    own, helper = line_of('udp_connect("192.0.2.12", 53)'), line_of("s.connect_ex(")
    assert sites(recorder, NODE, "192.0.2.12", 53) == (
        f"{HERE}:{own} in test_x > {HERE}:{helper} in udp_connect",
    )


def test_a_failure_in_the_recorder_never_fails_the_call(
    recorder: WhereRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(frame: object) -> str:
        raise RuntimeError("a bug in the recorder")

    monkeypatch.setattr(recorder, "_site", broken)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        assert s.connect_ex(("127.0.0.1", 9)) == 0
    assert recorder.export() == []


def test_a_process_records_sites_for_at_most_max_destinations(
    recorder: WhereRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(where_module, "MAX_DESTINATIONS", 3)
    recorder.begin(NODE, None)
    for port in range(1, 6):
        udp_connect("127.0.0.1", port)
    recorder.end()
    assert [bool(sites(recorder, NODE, "127.0.0.1", port)) for port in range(1, 6)] == [
        True, True, True, False, False
    ]  # fmt: skip


def test_a_lookups_lines_go_to_the_system_resolvers_destination(recorder: WhereRecorder) -> None:
    def test_lookup() -> None:
        with contextlib.suppress(OSError):
            socket.getaddrinfo("127.0.0.1", 80)  # a lookup (numeric: no query is sent)

    recorder.begin(NODE, test_lookup)
    test_lookup()
    recorder.end()
    resolver = replace(dest(NODE, "10.255.255.53", 53), resolver=True)
    other = dest(NODE, "192.0.2.1", 53)  # not the resolver: the lookup is not its line
    attached = list(recorder.attach([resolver, other]))
    line = line_of('socket.getaddrinfo("127.0.0.1", 80)')
    assert attached[0].where == (f"tests/unit/test_where.py:{line} in test_lookup",)
    assert attached[1].where == ()
    exported = recorder.export()
    into = WhereRecorder(ROOT)
    try:
        into.add(exported)  # an xdist worker's lookups reach its controller too
        assert next(iter(into.attach([resolver]))).where == attached[0].where
    finally:
        into.close()
