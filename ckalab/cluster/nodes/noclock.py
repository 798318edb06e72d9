"""Run a program under a seccomp filter that refuses to set any clock, then exec it.

    python -m ckalab.cluster.nodes.noclock PROGRAM [ARGS...]

Seccomp filters are inherited by every child and can never be removed, only stacked, and the
strictest answer wins. containerd and kubelet of a real node start through this, so every shim,
runc and container below them (whatever seccomp profile, capabilities or privileges the pod
asks for) gets EPERM from settimeofday, clock_settime, adjtimex, clock_adjtime and their 32-bit
forms. That is the node's default profile for the clock: a pod given CAP_SYS_TIME still has the
capability, but cannot use it to move this machine's time (which breaks every TLS connection
of the cluster). Uses libseccomp (Debian's libseccomp2) through ctypes; needs CAP_SYS_ADMIN,
which root has, so no_new_privs is not set and setuid programs in containers keep working.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import sys

# Every syscall that sets or slews a clock, on x86_64 and on the i386 and x32 ABIs a 64-bit
# kernel also accepts (a 32-bit binary in a container must not be a way around the filter).
CLOCK_SYSCALLS = ("settimeofday", "clock_settime", "clock_settime64", "adjtimex",
                  "clock_adjtime", "clock_adjtime64", "stime")
EXTRA_ARCHES = ("x86", "x32")
SCMP_ACT_ALLOW = 0x7FFF0000


def _errno_action(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


def install() -> None:
    """Load the filter into this process (and so into everything it execs or forks)."""
    _with_filter(lambda lib, ctx: lib.seccomp_load(ctx), "seccomp_load")


def pfc() -> str:
    """The filter as libseccomp's pseudo filter code (for tests and for the curious): one
    section per ABI, each naming the refused syscalls."""
    import tempfile

    with tempfile.TemporaryFile() as out:
        _with_filter(lambda lib, ctx: lib.seccomp_export_pfc(ctx, out.fileno()), "seccomp_export_pfc")
        out.seek(0)
        return out.read().decode()


def _with_filter(use, what: str) -> None:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
    lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_export_pfc.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    ctx = lib.seccomp_init(SCMP_ACT_ALLOW)
    if not ctx:
        raise OSError("seccomp_init failed")
    try:
        for arch in EXTRA_ARCHES:
            token = lib.seccomp_arch_resolve_name(arch.encode())
            rc = lib.seccomp_arch_add(ctx, token)
            if rc not in (0, -errno.EEXIST):
                raise OSError(-rc, f"seccomp_arch_add({arch})")
        for call in CLOCK_SYSCALLS:
            nr = lib.seccomp_syscall_resolve_name(call.encode())
            if nr == -1:  # __NR_SCMP_ERROR: this libseccomp does not know the name
                continue
            rc = lib.seccomp_rule_add(ctx, _errno_action(errno.EPERM), nr, 0)
            # -EDOM/-EINVAL: the call does not exist on one of the ABIs (stime on x86_64), fine.
            if rc not in (0, -errno.EDOM, -errno.EINVAL, -errno.EEXIST):
                raise OSError(-rc, f"seccomp_rule_add({call})")
        rc = use(lib, ctx)
        if rc != 0:
            raise OSError(-rc, what)
    finally:
        lib.seccomp_release(ctx)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m ckalab.cluster.nodes.noclock PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    try:
        install()
    except OSError as exc:
        # Never start a node process without the filter: it would let pods set the clock.
        print(f"noclock: cannot install the clock seccomp filter ({exc}); not starting {argv[0]}",
              file=sys.stderr)
        return 1
    os.execvp(argv[0], argv)
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
