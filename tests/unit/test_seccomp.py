"""Block mode's filter, run here by a small BPF interpreter on every kind of call, and what
block mode says of machines and kernels it cannot run on. (The real kernel runs it in
tests/integration/test_block.py.)"""

from __future__ import annotations

import errno
import struct

from hypothesis import given
from hypothesis import strategies as st

from netaudit import seccomp
from netaudit.seccomp import AUDIT_ARCH_I386, AUDIT_ARCH_X86_64, X32_BIT

ALLOW, NOTIFY = 0x7FFF0000, 0x7FC00000
ERRNO = 0x00050000
DENY = ERRNO | errno.EPERM
ENOSYS = ERRNO | errno.ENOSYS
#: Every action the filter returns; its BPF must never fall off its end.
ACTIONS = {ALLOW, NOTIFY, DENY, ENOSYS}


def run(program: bytes, arch: int, nr: int, args: tuple[int, ...] = (0,) * 6) -> int:
    """What the program returns for this seccomp_data (the opcodes the filter uses)."""
    data = struct.pack("<iIQ6Q", nr, arch, 0, *args, *(0,) * (6 - len(args)))
    code = [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]
    pc, a = 0, 0
    for _ in range(len(code) + 1):
        op, jt, jf, k = code[pc]
        if op == 0x20:  # LD W ABS
            (a,) = struct.unpack_from("<I", data, k)
            pc += 1
        elif op == 0x15:  # JEQ K
            pc += 1 + (jt if a == k else jf)
        elif op == 0x35:  # JGE K
            pc += 1 + (jt if a >= k else jf)
        elif op == 0x06:  # RET K
            return int(k)
        else:
            raise AssertionError(f"unexpected opcode {op:#x}")
    raise AssertionError("the program loops")


PROGRAM = seccomp.egress_program(errno.EPERM)
WITH_ADDRESS = (3, 0x1000, 16, 0, 0x7FFD0000, 16)


def test_every_egress_call_of_x86_64_goes_to_the_supervisor() -> None:
    for nr in (seccomp.NR_CONNECT, seccomp.NR_SENDMSG, seccomp.NR_SENDMMSG):
        assert run(PROGRAM, AUDIT_ARCH_X86_64, nr) == NOTIFY
    assert run(PROGRAM, AUDIT_ARCH_X86_64, seccomp.NR_SENDTO, WITH_ADDRESS) == NOTIFY


def test_a_send_on_a_connected_socket_costs_nothing() -> None:
    assert run(PROGRAM, AUDIT_ARCH_X86_64, seccomp.NR_SENDTO, (3, 0x1000, 1, 0, 0, 0)) == ALLOW


def test_an_address_is_an_address_in_either_half_of_the_pointer() -> None:
    high_only = (3, 0x1000, 1, 0, 0x5555_0000_0000, 16)
    assert run(PROGRAM, AUDIT_ARCH_X86_64, seccomp.NR_SENDTO, high_only) == NOTIFY


def test_io_uring_setup_fails_as_on_a_kernel_without_it() -> None:
    for arch in (AUDIT_ARCH_X86_64, AUDIT_ARCH_I386):
        assert run(PROGRAM, arch, seccomp.NR_IO_URING_SETUP) == ENOSYS
    assert run(PROGRAM, AUDIT_ARCH_X86_64, X32_BIT | seccomp.NR_IO_URING_SETUP) == ENOSYS


def test_i386_calls_go_to_the_supervisor_directly_and_through_socketcall() -> None:
    for nr in (seccomp.I386_CONNECT, seccomp.I386_SENDMSG, seccomp.I386_SENDMMSG):
        assert run(PROGRAM, AUDIT_ARCH_I386, nr) == NOTIFY
    assert run(PROGRAM, AUDIT_ARCH_I386, seccomp.I386_SENDTO, WITH_ADDRESS) == NOTIFY
    assert run(PROGRAM, AUDIT_ARCH_I386, seccomp.I386_SENDTO, (3, 1, 1, 0, 0, 0)) == ALLOW
    for call in seccomp.SOCKETCALL:
        assert run(PROGRAM, AUDIT_ARCH_I386, seccomp.I386_SOCKETCALL, (call, 0x1000)) == NOTIFY
    send, recv = 9, 10  # socketcall's own send and recv: no address to judge
    for call in (send, recv):
        assert run(PROGRAM, AUDIT_ARCH_I386, seccomp.I386_SOCKETCALL, (call, 0x1000)) == ALLOW


def test_x32_egress_is_refused_with_the_chosen_errno_and_the_rest_runs() -> None:
    program = seccomp.egress_program(errno.EACCES)
    assert run(program, AUDIT_ARCH_X86_64, X32_BIT | 42) == ERRNO | errno.EACCES
    assert run(program, AUDIT_ARCH_X86_64, X32_BIT | 518) == ERRNO | errno.EACCES  # sendmsg
    assert run(program, AUDIT_ARCH_X86_64, X32_BIT | 0) == ALLOW  # read


def test_an_unknown_architecture_is_refused() -> None:
    aarch64 = 0xC00000B7
    assert run(PROGRAM, aarch64, 203) == DENY


@given(
    st.sampled_from([AUDIT_ARCH_X86_64, AUDIT_ARCH_I386, 0xC00000B7]),
    st.integers(0, 0x7FFFFFFF),
    st.tuples(*[st.integers(0, 2**64 - 1)] * 6),
)
def test_the_filter_always_ends_in_one_of_its_actions(
    arch: int, nr: int, args: tuple[int, ...]
) -> None:
    action = run(PROGRAM, arch, nr, args)
    assert action in ACTIONS
    egress = {
        AUDIT_ARCH_X86_64: {seccomp.NR_CONNECT, seccomp.NR_SENDTO, seccomp.NR_SENDMSG,
                            seccomp.NR_SENDMMSG},
        AUDIT_ARCH_I386: {seccomp.I386_CONNECT, seccomp.I386_SENDTO, seccomp.I386_SENDMSG,
                          seccomp.I386_SENDMMSG, seccomp.I386_SOCKETCALL},
    }.get(arch)  # fmt: skip
    if action == NOTIFY:
        assert egress is not None and nr in egress
    if egress is not None and action == ALLOW and nr not in (seccomp.NR_SENDTO, 369, 102):
        assert nr not in egress


def test_block_mode_names_the_kernel_it_needs() -> None:
    assert seccomp.unsupported("x86_64", "6.18.44-fc") == ""
    too_old = seccomp.unsupported("x86_64", "5.4.0-150-generic")
    assert "needs Linux 5.6 or newer" in too_old
    assert "this kernel is 5.4.0-150-generic" in too_old
    assert "pidfd_getfd: 5.6" in too_old


def test_block_mode_names_the_machines_it_runs_on() -> None:
    assert seccomp.unsupported("aarch64", "6.8.0") == (
        "block mode runs on x86_64 machines only (this one is aarch64)"
    )


def test_a_kernel_version_is_read_from_its_release() -> None:
    assert seccomp.kernel_version("5.19.0-rc1") == (5, 19)
    assert seccomp.kernel_version("6") == (6, 0)
    assert seccomp.kernel_version("weird") == (0, 0)
