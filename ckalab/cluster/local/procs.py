"""Which processes belong to which local cluster, and which process holds a port.

Every cluster runs the same binaries from the same cache path, so a binary path (or a pid file
that may be stale) says nothing about the owner. A process belongs to the cluster in directory D
when it runs one of the component binaries and either its environment carries
CKALAB_CLUSTER_DIR=D (set by `up`) or, for processes started before that variable existed,
one of its arguments points into D/ (every component reads its certificates or data from there).
"""

from __future__ import annotations

import os
from pathlib import Path

CLUSTER_ENV = "CKALAB_CLUSTER_DIR"
COMPONENT_ENV = "CKALAB_COMPONENT"


def marker_env(cluster_dir: Path, component: str) -> dict[str, str]:
    """The environment of a component process: ours, plus the markers that identify it."""
    return {**os.environ, CLUSTER_ENV: str(cluster_dir), COMPONENT_ENV: component}


def _argv(pid: int) -> list[str] | None:
    """The command line of a live process (None for zombies, vanished or unreadable ones)."""
    raw = _proc_file(pid, "cmdline")  # empty for a zombie
    if raw is None:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0") if a] or None


def _stat(pid: int) -> list[str]:
    """The fields of /proc/PID/stat after the command name (which may hold spaces and
    parentheses): [state, ppid, ...]; [] for a process that is gone."""
    raw = _proc_file(pid, "stat")
    return raw.decode(errors="replace").rsplit(")", 1)[1].split() if raw and b")" in raw else []


def alive(pid: int) -> bool:
    """Whether `pid` still runs (not gone, not a zombie). For a pid already known to be ours:
    unlike its command line, this cannot misread a process in the middle of an exec."""
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it was our child and has died
    except OSError:
        pass  # not our child
    fields = _stat(pid)
    return bool(fields) and fields[0] not in ("Z", "X")


def parent(pid: int) -> int | None:
    """The pid of the process that started `pid` (its ppid); None when `pid` is gone."""
    fields = _stat(pid)
    return int(fields[1]) if len(fields) > 1 else None


def start_time(pid: int) -> str | None:
    """When `pid` started (clock ticks since boot, /proc/PID/stat field 22): with the pid, names
    one process for good, since a pid is reused only by a later process."""
    fields = _stat(pid)
    return fields[19] if len(fields) > 19 else None


def environ_bytes(pid: int) -> bytes | None:
    """/proc/PID/environ as it is (b"" while it execs); None when it cannot be read (gone, or
    another user's process: only its command line can tell)."""
    return _proc_file(pid, "environ")


def _proc_file(pid: int, name: str) -> bytes | None:
    """/proc/PID/NAME, None when it cannot be read. With os.read rather than pathlib: status
    polls scan every process of the machine, several hundred while tests run."""
    try:
        fd = os.open(f"/proc/{pid}/{name}", os.O_RDONLY)
    except OSError:
        return None
    try:
        return b"".join(iter(lambda: os.read(fd, 1 << 16), b""))
    except OSError:
        return None
    finally:
        os.close(fd)


def environ_value(raw: bytes, key: str) -> str | None:
    """One variable of an environment as environ_bytes() gives it (its first, as getenv reads)."""
    k = key.encode() + b"="
    if raw.startswith(k):
        start = len(k)
    else:
        at = raw.find(b"\0" + k)
        if at < 0:
            return None
        start = at + 1 + len(k)
    end = raw.find(b"\0", start)
    return raw[start:end if end >= 0 else len(raw)].decode(errors="replace")


def environ(pid: int) -> dict[str, str] | None:
    """The environment `pid` started with ({} while it execs); None when it cannot be read."""
    raw = environ_bytes(pid)
    if raw is None:
        return None
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


def component_of(pid: int, cluster_dir: Path, components: tuple[str, ...]) -> str | None:
    """The component `pid` runs for the cluster in `cluster_dir`, or None when it is not one of
    that cluster's processes (dead, another program, or another cluster's component)."""
    argv = _argv(pid)
    if not argv or Path(argv[0]).name not in components or not alive(pid):
        return None
    comp = Path(argv[0]).name
    owner = environ_value(environ_bytes(pid) or b"", CLUSTER_ENV)
    if owner is not None:
        return comp if owner == str(cluster_dir) else None
    inside = f"{cluster_dir}/"  # the slash keeps 'ckalab' from matching 'ckalab-test'
    return comp if any(inside in a for a in argv[1:]) else None


def find(cluster_dir: Path, components: tuple[str, ...]) -> dict[str, list[int]]:
    """component -> pids of every live process of this cluster, recorded in a pid file or not."""
    found: dict[str, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            comp = component_of(int(entry.name), cluster_dir, components)
            if comp:
                found.setdefault(comp, []).append(int(entry.name))
    for pids in found.values():
        pids.sort(key=_start_ticks)
    return found


def _start_ticks(pid: int) -> int:
    """When the process started (clock ticks since boot): the oldest copy of a component first."""
    return int(start_time(pid) or 0)


def port_holder(port: int) -> tuple[int, str] | None:
    """(pid, name) of the live process with a TCP socket on `port`; None when none can be seen:
    no socket, or sockets no process holds any more (the listener of a process that exited a
    moment ago, which the kernel has not closed yet, or connections winding down), or a process
    of a user whose descriptors this one may not read."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and int(fields[1].rsplit(":", 1)[1], 16) == port and fields[9] != "0":
                inodes.add(fields[9])
    wanted = {f"socket:[{i}]" for i in inodes}
    for entry in os.scandir("/proc") if wanted else ():
        if not entry.name.isdigit():
            continue
        try:
            with os.scandir(f"/proc/{entry.name}/fd") as fds:
                mine = any(os.readlink(fd.path) in wanted for fd in fds)
            if mine:
                return int(entry.name), Path(f"/proc/{entry.name}/comm").read_text().strip()
        except OSError:
            continue
    return None


def port_user(port: int) -> str:
    """Who has a TCP socket on `port`, for messages: 'pid N (name)' or a plain description."""
    holder = port_holder(port)
    return f"pid {holder[0]} ({holder[1]})" if holder else "a process this user cannot see, or one that just exited"
