"""Reliability of the lifecycle and of ckalab's state: each test reproduces a reported failure.

The first group needs no cluster (locks, state files, ports, file modes, the CLI's edges); the
second runs a real local cluster of its own ('ckalab-rel', in the test home) and is destructive
to it: concurrent `up`s, restarts, a killed API server, a taken port.
"""

from __future__ import annotations

import http.client
import json
import multiprocessing
import os
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ckalab import cli, exam, home, labs
from ckalab.cluster import get_cluster
from ckalab.cluster import local
from ckalab.cluster.local import LocalCluster, _bindable, procs
from ckalab.cluster.local import pki as kpki
from ckalab.errors import CkalabError, ClusterNotRunning
from ckalab.waiting import WaitTimeout, wait_for

CKALAB = str(Path(sys.executable).parent / "ckalab")


def _own_home(monkeypatch, tmp_path) -> Path:
    monkeypatch.setenv("CKALAB_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


# --- state under concurrency -----------------------------------------------------------------

def _advance(lab_id: str) -> int:
    return labs.hint_state(lab_id, advance=True)


def test_parallel_hints_all_count(monkeypatch, tmp_path):
    """20 hint clicks at once used to leave the counter at 2, and 10 labs at once 1 entry."""
    h = _own_home(monkeypatch, tmp_path)
    with multiprocessing.get_context("fork").Pool(10) as pool:
        seen = pool.map(_advance, ["rbac-role"] * 20)
        pool.map(_advance, [f"lab-{i}" for i in range(10)])
    assert sorted(seen) == list(range(1, 21))  # every click saw its own count
    counts = json.loads((h / "hints.json").read_text())
    assert counts == {"rbac-role": 20, **{f"lab-{i}": 1 for i in range(10)}}
    assert labs.hint_state("rbac-role", reset=True) == 0


def test_wait_for_polls_less_often_the_longer_it_waits_and_names_what_it_waited_for():
    calls = []

    def never():
        calls.append(time.monotonic())
        raise ConnectionRefusedError("connection refused")

    with pytest.raises(WaitTimeout, match=r"timed out after 3s waiting for the API server "
                                          r"\(last error: connection refused\)"):
        wait_for(never, 3, "the API server", interval=0.1)
    gaps = [b - a for a, b in zip(calls, calls[1:])]
    assert gaps[0] < 0.3  # a quick first look
    assert max(gaps) >= 0.5 and max(gaps) <= 1.2  # spaced out, up to the cap
    assert 8 <= len(calls) <= 16  # 30 at a fixed 0.1 s
    assert calls[-1] - calls[0] >= 2.9  # and it did wait the whole time


def test_lock_waits_with_a_message_then_gives_up_naming_the_holder(tmp_path):
    path = tmp_path / "x.lock"
    held, release = threading.Event(), threading.Event()

    def holder():
        with home.locked(path, "'ckalab up --name x'", timeout=5):
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    held.wait(5)
    said: list[str] = []
    try:
        with pytest.raises(CkalabError) as exc:
            with home.locked(path, "'ckalab down --name x'", timeout=0.5, progress=said.append):
                pass
        assert said == [f"Waiting for 'ckalab up --name x' (pid {os.getpid()}, running for 0s) to finish "
                        f"(lock {path}) ..."]
        assert str(exc.value).startswith(f"Gave up after 0s: 'ckalab up --name x' (pid {os.getpid()}, running for ")
        assert str(exc.value).endswith(f"still holds {path}. Wait for it to finish, or stop it if it hangs.")
    finally:
        release.set()
        t.join()
    with home.locked(path, "later", timeout=1):  # released with the holder
        pass


# --- damaged state files ---------------------------------------------------------------------

@pytest.mark.parametrize("content,problem", [
    ("[1, 2]", "expected an object of lab id -> hints seen, found list"),
    ('{"rbac-role": "three"}', "the count of 'rbac-role' is not a whole number >= 0"),
    ('{"rbac-role": 2', "it is not valid JSON (Expecting ',' delimiter: line 1 column 16 (char 15))"),
    ("", "it is empty"),
])
def test_damaged_hints_file_is_named(monkeypatch, tmp_path, capsys, content, problem):
    h = _own_home(monkeypatch, tmp_path)
    h.mkdir()
    (h / "hints.json").write_text(content)
    assert cli.main(["hint", "rbac-role"]) == 2
    assert capsys.readouterr().err == (
        f"error: The state file {h}/hints.json is damaged: {problem}. Delete it to count every lab's hints "
        f"from 0 again (rm {h}/hints.json).\n")


@pytest.mark.parametrize("content,problem", [
    ('"local"', "expected an object, found str"),
    ('{"backend": "local", "ports": [1, 2]}', "'ports' must map names to port numbers, found [1, 2]"),
    ('{"backend": "docker"}', "unknown backend 'docker'"),
])
def test_damaged_cluster_file_is_named(monkeypatch, tmp_path, capsys, content, problem):
    h = _own_home(monkeypatch, tmp_path)
    f = h / "clusters" / "broken" / "cluster.json"
    f.parent.mkdir(parents=True)
    f.write_text(content)
    for verb in ("status", "up", "kubeconfig"):
        assert cli.main([verb, "--name", "broken"]) == 2
        assert capsys.readouterr().err == (
            f"error: The state file {f} is damaged: {problem}. Move it aside (mv {f} {f}.damaged), then run "
            "'ckalab down --name broken' and 'ckalab up --name broken': certificates, etcd data and addresses "
            "are kept.\n")
    # The local backend reads it too (get_cluster with a backend skips the lookup).
    (f.parent / "etc" / "kubernetes").mkdir(parents=True)
    with pytest.raises(CkalabError, match="is damaged"):
        get_cluster("broken", "local").status()


@pytest.mark.parametrize("state,problem", [
    ([], "expected an object, found list"),
    ({"id": "x", "started_at": "noon", "deadline": 1, "duration_min": 1, "tasks": []},
     "started_at must be numbers"),
    ({"id": "x", "started_at": 0, "deadline": 1, "duration_min": 1, "tasks": [{"lab": "rbac-role"}]},
     "'tasks' must be a list of tasks, each with n, lab, title, params, weight and minutes"),
])
def test_damaged_exam_file_is_named(monkeypatch, tmp_path, capsys, state, problem):
    h = _own_home(monkeypatch, tmp_path)
    f = h / "exam" / "exam.json"
    f.parent.mkdir(parents=True)
    f.write_text(json.dumps(state))
    for argv in (["exam", "status"], ["exam", "finish"], ["hint", "rbac-role"]):
        assert cli.main(argv) == 2
        assert capsys.readouterr().err == (
            f"error: The state file {f} is damaged: {problem}. Move it aside (mv {f} {f}.damaged) and start "
            "a new exam with 'ckalab exam start'; the exam it recorded cannot be graded.\n")


# --- ports -----------------------------------------------------------------------------------

def _tcp_states(port: int) -> set[str]:
    """The TCP states (hex codes of /proc/net/tcp: 06 = TIME_WAIT) of sockets on a local port."""
    out = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if int(f[1].rsplit(":", 1)[1], 16) == port:
            out.add(f[3])
    return out


def _leave_time_wait(port: int) -> None:
    """Serve one connection on `port` and close it server-side first, as the API server does on
    `down`: the server's end then waits in TIME_WAIT (60 s on Linux) on that port."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    cli_sock = socket.create_connection(("127.0.0.1", port))
    conn, _ = srv.accept()
    conn.close()
    time.sleep(0.1)
    cli_sock.close()
    srv.close()


def _old_probe_fails(port: int) -> bool:
    """The probe before the fix: a plain bind, which TIME_WAIT refuses."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return False
        except OSError:
            return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_port_in_time_wait_is_kept(monkeypatch, tmp_path):
    _own_home(monkeypatch, tmp_path)
    port = _free_port()
    _leave_time_wait(port)
    assert "06" in _tcp_states(port) and _old_probe_fails(port)  # the original failure's condition
    recorded = {"etcd": 1, "etcd-peer": 2, "etcd-metrics": 3, "apiserver": port,
                "controller-manager": 4, "scheduler": 5, "kwok": 6}
    recorded = {n: (p if n == "apiserver" else _free_port()) for n, p in recorded.items()}
    said: list[str] = []
    assert LocalCluster("tw")._ports(recorded, said.append) == recorded
    assert said == []


def test_a_port_taken_by_another_listener_is_repicked_and_reported(monkeypatch, tmp_path):
    _own_home(monkeypatch, tmp_path)
    names = ("etcd", "etcd-peer", "etcd-metrics", "apiserver", "controller-manager", "scheduler", "kwok")
    recorded = {n: _free_port() for n in names}
    with socket.socket() as other:
        other.bind(("127.0.0.1", recorded["apiserver"]))
        other.listen(1)
        said: list[str] = []
        ports = LocalCluster("taken")._ports(recorded, said.append)
    old, new = recorded["apiserver"], ports["apiserver"]
    assert new != old and {n: p for n, p in ports.items() if n != "apiserver"} == {
        n: p for n, p in recorded.items() if n != "apiserver"}
    lo = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert new < lo or new > 60999  # outside the ephemeral range: no client borrows it meanwhile
    comm = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    assert said == [
        f"Port {old} (apiserver) of cluster 'taken' is in use by pid {os.getpid()} ({comm}): using port {new} instead.",
        f"The API server moves to https://127.0.0.1:{new}: the kubeconfigs in {tmp_path}/home/clusters/taken/etc/"
        f"kubernetes follow; kubeconfigs you wrote yourself still name port {old}."]


def test_ports_another_home_picked_are_avoided_until_its_cluster_goes(monkeypatch, tmp_path):
    """Clusters of different homes (test workers, learners' homes) share the machine's ports. A
    port is bound only when its component starts, up to a minute later with real nodes: four
    workers starting at once gave one's kwok the port another had just picked for its API server."""
    _own_home(monkeypatch, tmp_path / "a")
    first = LocalCluster("claims")
    first.dir.mkdir(parents=True)
    ports = first._ports({}, lambda m: None)  # picked, nothing bound yet
    _own_home(monkeypatch, tmp_path / "b")
    second = LocalCluster("claims")
    second.dir.mkdir(parents=True)
    assert set(ports.values()) <= second._other_clusters_ports()
    assert not set(ports.values()) & set(second._ports({}, lambda m: None).values())
    shutil.rmtree(tmp_path / "a")  # that cluster is gone: its ports are free again
    assert not set(ports.values()) & second._other_clusters_ports()
    assert not first._claim_file().exists()
    shutil.rmtree(tmp_path / "b")
    first._other_clusters_ports()  # the next pick anywhere drops the claims of clusters gone
    assert not second._claim_file().exists()


def _held_by_no_process(port: int) -> socket.socket:
    """A listener on `port` that no process holds, as the kernel keeps a stopped component's for a
    moment after its process is gone: its only reference rides in a unix socket's queue. Closing
    the returned socket (the queue's owner) closes the listener."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1)
    sender, queue = socket.socketpair()
    socket.send_fds(sender, [b"x"], [listener.fileno()])
    listener.close()
    sender.close()
    return queue


def test_a_port_a_stopped_component_still_holds_is_waited_for_not_moved(monkeypatch, tmp_path):
    """CI once moved the API server's port because `up` probed it 0.3 s after stopping the
    component that listened there: a port no live process holds is given time to be released."""
    _own_home(monkeypatch, tmp_path)
    names = ("etcd", "etcd-peer", "etcd-metrics", "apiserver", "controller-manager", "scheduler", "kwok")
    recorded = {n: _free_port() for n in names}
    queue = _held_by_no_process(recorded["apiserver"])
    assert not _bindable(recorded["apiserver"]) and procs.port_holder(recorded["apiserver"]) is None
    timer = threading.Timer(1.0, queue.close)
    timer.start()
    said: list[str] = []
    try:
        assert LocalCluster("stopped")._ports(recorded, said.append) == recorded
    finally:
        timer.cancel()
        queue.close()
    assert said == []


def test_a_port_never_released_moves_after_the_wait_and_says_why(monkeypatch, tmp_path):
    _own_home(monkeypatch, tmp_path)
    monkeypatch.setattr(local, "PORT_RELEASE_SECONDS", 0.5)
    names = ("etcd", "etcd-peer", "etcd-metrics", "apiserver", "controller-manager", "scheduler", "kwok")
    recorded = {n: _free_port() for n in names}
    queue = _held_by_no_process(recorded["scheduler"])
    said: list[str] = []
    try:
        ports = LocalCluster("held")._ports(recorded, said.append)
    finally:
        queue.close()
    old, new = recorded["scheduler"], ports["scheduler"]
    assert new != old and {n: p for n, p in ports.items() if n != "scheduler"} == {
        n: p for n, p in recorded.items() if n != "scheduler"}
    assert said == [f"Port {old} (scheduler) of cluster 'held' is in use by a process this user cannot see, "
                    f"or one that just exited: using port {new} instead."]


# --- files and the CLI's edges ---------------------------------------------------------------

def test_keys_and_kubeconfigs_are_created_private(tmp_path, monkeypatch):
    """Written 0600 from the start, not chmod-ed afterwards (with umask 0 a plain write is 0666)."""
    def no_chmod(*a, **k):
        raise AssertionError("chmod called: the file existed with a wider mode first")

    monkeypatch.setattr(os, "chmod", no_chmod)
    monkeypatch.setattr(Path, "chmod", no_chmod)
    old = os.umask(0)
    try:
        etc = tmp_path / "etc"
        kpki.generate(etc, "controlplane", "127.0.0.1")
        kpki.write_kubeconfigs(etc, "https://127.0.0.1:1")
        kpki.write_kubeconfigs(etc, "https://127.0.0.1:2")  # rewritten with a new server: still 0600
    finally:
        os.umask(old)
    private = sorted(etc.rglob("*.key")) + sorted(etc.glob("*.conf"))
    assert len(private) >= 15
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in private} == {p.name: 0o600 for p in private}
    assert stat.S_IMODE((etc / "pki" / "ca.crt").stat().st_mode) == 0o666  # certificates are public
    assert "127.0.0.1:2" in (etc / "admin.conf").read_text()


@pytest.mark.parametrize("argv", [["labs"], ["status", "--name", "never-made"], ["--help"]])
def test_output_into_a_closed_pipe_ends_quietly(argv):
    """`ckalab labs | head -1` used to end in a BrokenPipeError traceback."""
    proc = subprocess.Popen([CKALAB, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before ckalab writes
    err = proc.stderr.read().decode()
    proc.wait(60)
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert proc.returncode == (0 if argv == ["--help"] else 141)  # argparse itself ignores a gone reader


def test_a_misspelled_lab_gets_the_closest_id(capsys):
    assert cli.main(["hint", "rbac-rol"]) == 2
    assert capsys.readouterr().err == "error: No lab 'rbac-rol'. Did you mean 'rbac-role'? 'ckalab labs' lists them all.\n"
    assert cli.main(["check", "zzz"]) == 2
    assert capsys.readouterr().err == "error: No lab 'zzz'. 'ckalab labs' lists them all.\n"


def test_check_before_start_says_start(monkeypatch, tmp_path, capsys):
    _own_home(monkeypatch, tmp_path)
    assert cli.main(["check", "service-accounts", "--name", "nowhere"]) == 2
    assert capsys.readouterr().err == ("error: Lab 'service-accounts' has not been started here: "
                                      "'ckalab start service-accounts' sets it up and prints the task.\n")


# --- a real cluster of our own ---------------------------------------------------------------

REL = "ckalab-rel"


def _rel() -> LocalCluster:
    return LocalCluster(REL)


def _mine(c: LocalCluster) -> dict[str, list[int]]:
    return procs.find(c.dir, ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"))


def _ckalab(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([CKALAB, *args, "--name", REL], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **kw)


@pytest.fixture(scope="module")
def rel():
    c = _rel()
    yield c
    c.down(progress=lambda m: None)
    assert _mine(c) == {}


def test_two_ups_at_once_then_down_leaves_nothing(rel):
    """Two `ckalab up` at once used to start two control planes; `down` then stopped one."""
    first = _ckalab("up")

    def first_holds_the_lock():
        try:
            return json.loads((rel.dir / "lifecycle.lock").read_text())["pid"] == first.pid
        except (OSError, ValueError, KeyError):
            return False

    wait_for(first_holds_the_lock, 60, "the first 'ckalab up' to take the lock")
    second = _ckalab("up")
    out1, out2 = first.communicate(timeout=600), second.communicate(timeout=600)
    assert first.returncode == 0 and second.returncode == 0, (out1, out2)
    assert f"Waiting for 'ckalab up --name {REL}' (pid {first.pid}, running for" in out2[0]
    assert out2[0].rstrip().endswith(f"Cluster '{REL}' is already running (local backend).")
    found = _mine(rel)
    assert sorted(found) == sorted(["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok"])
    assert all(len(p) == 1 for p in found.values()), found
    assert rel.status().state == "running"
    down = _ckalab("down")
    assert down.communicate(timeout=120)[0].startswith("Stopped kwok, kube-scheduler, kube-controller-manager, "
                                                      "kube-apiserver, etcd of cluster 'ckalab-rel'.")
    assert _mine(rel) == {} and rel.status().state == "stopped"


def test_down_finds_processes_without_pid_files_and_up_drops_extra_copies(rel):
    rel.up(progress=lambda m: None)
    # What a crash (or an old, unlocked `up` racing another) leaves: no pid files, and a second
    # copy of a component started outside ckalab's bookkeeping (no markers in its environment).
    for f in (rel.dir / "run").glob("*.pid"):
        f.unlink()
    cmd = rel.manifest("kube-scheduler")["spec"]["containers"][0]["command"]
    binary = _mine(rel)["kube-scheduler"][0]
    exe = os.readlink(f"/proc/{binary}/exe")
    extra_cmd = [exe, *(a if not a.startswith("--secure-port=") else f"--secure-port={_free_port()}" for a in cmd[1:])]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CKALAB_")}
    extra = subprocess.Popen(extra_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                             start_new_session=True)
    try:
        # Its environment is readable once the exec has finished (a loaded machine took longer).
        from ckalab.waiting import wait_for
        wait_for(lambda: procs.component_of(extra.pid, rel.dir, ("kube-scheduler",)) == "kube-scheduler", 10,
                 "the extra kube-scheduler's markers")
        st = rel.status()
        assert st.state == "degraded" and all(c.state == "running" for c in st.components)
        assert f"1 more process(es) of this cluster run untracked (pids {extra.pid})" in st.message
        said: list[str] = []
        rel.up(progress=said.append)
        assert said[0].startswith("Stopping 1 extra kube-scheduler process(es) of 'ckalab-rel' (pids ")
        assert said[-1] == "Cluster 'ckalab-rel' is already running (local backend)."
        assert all(len(p) == 1 for p in _mine(rel).values()) and rel.status().state == "running"
        for f in (rel.dir / "run").glob("*.pid"):
            f.unlink()
        rel.down(progress=said.append)
        assert _mine(rel) == {}
    finally:
        if extra.poll() is None:
            extra.kill()
        extra.wait(10)


def test_a_stale_pid_file_never_stops_another_cluster(rel, tmp_path):
    """All clusters run the same binaries: a pid file naming another cluster's etcd must not
    make `down` stop it."""
    rel.up(progress=lambda m: None)
    etcd = _mine(rel)["etcd"][0]
    other = LocalCluster("ckalab-rel-other")
    (other.dir / "run").mkdir(parents=True, exist_ok=True)
    (other.etc).mkdir(parents=True, exist_ok=True)
    binary = os.readlink(f"/proc/{etcd}/exe")
    (other.dir / "run" / "etcd.pid").write_text(json.dumps({"pid": etcd, "binary": binary}))
    try:
        assert other.status().components[0].state == "exited"  # recorded, but not running for it
        said: list[str] = []
        other.down(progress=said.append)
        assert said == ["Cluster 'ckalab-rel-other' is not running; nothing to stop."]
        assert _mine(rel)["etcd"] == [etcd] and rel.status().state == "running"
    finally:
        shutil.rmtree(other.dir, ignore_errors=True)


def test_the_api_server_keeps_its_address_across_down_and_up(rel):
    """TIME_WAIT after `down` used to move the API server to a new port on most restarts."""
    rel.up(progress=lambda m: None)
    server = rel.status().server
    port = int(server.rsplit(":", 1)[1])
    # A kept-alive connection: `down` closes it from the server's side, leaving TIME_WAIT there.
    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ssl.create_default_context(
        cafile=str(rel.etc / "pki" / "ca.crt")))
    conn.request("GET", "/readyz")
    assert conn.getresponse().read() == b"ok"
    rel.down(progress=lambda m: None)
    try:  # read what the server sent on its way out: closing with unread data would send RST
        while conn.sock.recv(4096):
            pass
    except (OSError, ssl.SSLError):
        pass
    conn.close()
    assert "06" in _tcp_states(port) and _old_probe_fails(port)  # the condition that moved it
    said: list[str] = []
    rel.up(progress=said.append)
    assert rel.status().server == server
    assert not [m for m in said if "in use" in m]


def test_a_port_really_taken_moves_with_a_message(rel):
    rel.down(progress=lambda m: None)
    old = rel.load_state()["ports"]
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(100):  # wait out any TIME_WAIT, which a listener cannot share
            try:
                squatter.bind(("127.0.0.1", old["apiserver"]))
                break
            except OSError:
                time.sleep(1)
        squatter.listen(1)
        said: list[str] = []
        rel.up(progress=said.append)
    new = rel.load_state()["ports"]
    assert new["apiserver"] != old["apiserver"] and {k: v for k, v in new.items() if k != "apiserver"} == {
        k: v for k, v in old.items() if k != "apiserver"}
    assert f"Port {old['apiserver']} (apiserver) of cluster '{REL}' is in use by pid {os.getpid()}" in said[0]
    assert rel.status().server == f"https://127.0.0.1:{new['apiserver']}"
    from ckalab.kube import Kube
    assert Kube(rel.kubeconfig).whoami()["username"] == "kubernetes-admin"  # admin.conf followed


def test_up_stops_waiting_when_a_component_exits(rel, monkeypatch):
    """A component that dies at once used to cost the full 90 s wait before any message."""
    rel.down(progress=lambda m: None)
    real = LocalCluster._commands

    def broken(self, ports, bins):
        cmds = real(self, ports, bins)
        cmds["kube-scheduler"].append("--no-such-flag")
        return cmds

    monkeypatch.setattr(LocalCluster, "_commands", broken)
    t0 = time.monotonic()
    with pytest.raises(CkalabError) as exc:
        rel.up(progress=lambda m: None)
    took = time.monotonic() - t0
    msg = str(exc.value)
    pid = rel._recorded("kube-scheduler")
    assert msg.startswith(f"Cluster '{REL}' did not start: kube-scheduler (pid {pid}) exited while waiting for "
                          "kube-apiserver /readyz.")
    assert "last lines of" in msg and "unknown flag: --no-such-flag" in msg
    assert took < 45, took
    monkeypatch.undo()
    rel.down(progress=lambda m: None)


def test_the_controller_manager_starts_once_the_api_server_is_ready(rel):
    """It waits only 10 s for the API server's /healthz, then exits: started alongside a slow
    API server it died on a loaded machine (CI on 899db49), so `up` starts it after /readyz."""
    rel.down(progress=lambda m: None)
    ready_at: list[float] = []

    def said(m: str) -> None:
        if "kube-apiserver ready after" in m:
            ready_at.append(time.clock_gettime(time.CLOCK_BOOTTIME))

    rel.up(progress=said)
    [kcm] = _mine(rel)["kube-controller-manager"]
    started = int(procs.start_time(kcm)) / os.sysconf("SC_CLK_TCK")  # seconds since boot
    [api] = _mine(rel)["kube-apiserver"]
    assert int(procs.start_time(api)) / os.sysconf("SC_CLK_TCK") <= ready_at[0]
    assert started >= ready_at[0] - 0.05, (started, ready_at)


BOOM = """\
apiVersion: ckalab/v1
id: {id}
title: {id}
order: 1
topic: Testing
task: task.md
hints: ["none"]
solution: {{}}
"""
BOOM_GRADER = '''
import os, signal
from ckalab.grading import check, expect

@check(1, "the cluster answers")
def test_first(kube, cluster):
    expect(kube.core.list_namespace().items, "no namespaces")
    if os.environ.get("BOOM_KILL"):  # the API server dies in the middle of the check run
        pid = next(c.pid for c in cluster.status().components if c.name == "kube-apiserver")
        os.kill(pid, signal.SIGKILL)

@check(1, "the cluster still answers")
def test_second(kube):
    expect(kube.core.list_namespace().items, "no namespaces")
'''


@pytest.fixture
def boom(tmp_path, monkeypatch, rel):
    for lab_id in ("boom", "calm"):
        d = tmp_path / "labs" / lab_id
        d.mkdir(parents=True)
        (d / "lab.yaml").write_text(BOOM.format(id=lab_id))
        (d / "task.md").write_text("Nothing to do.\n")
        (tmp_path / "graders").mkdir(exist_ok=True)
        (tmp_path / "graders" / f"{lab_id}.py").write_text(BOOM_GRADER)
    monkeypatch.setenv("CKALAB_LABS_DIR", str(tmp_path / "labs"))
    monkeypatch.setenv("CKALAB_GRADERS_DIR", str(tmp_path / "graders"))
    shutil.rmtree(exam.exam_dir(), ignore_errors=True)
    rel.up(progress=lambda m: None)
    yield rel
    shutil.rmtree(exam.exam_dir(), ignore_errors=True)


def test_check_exits_2_when_the_api_server_dies_mid_check(boom, capsys, monkeypatch):
    labs.start(labs.load("boom"), boom)
    assert cli.main(["check", "boom", "--name", REL]) == 0
    capsys.readouterr()
    monkeypatch.setenv("BOOM_KILL", "1")
    assert cli.main(["check", "boom", "--name", REL]) == 2
    out = capsys.readouterr()
    assert out.out == ""
    assert out.err == (f"error: Cluster '{REL}' stopped answering during the check, so it could not be graded: "
                       f"see 'ckalab status --name {REL}'.\n")
    monkeypatch.delenv("BOOM_KILL")
    _restart(boom)
    assert cli.main(["check", "boom", "--name", REL]) == 0


def _restart(c: LocalCluster) -> None:
    """down + up: a controller manager that lost its API server while starting may exit a little
    later, so restarting only the API server would leave the next step racing it."""
    c.down(progress=lambda m: None)
    c.up(progress=lambda m: None)


def test_exam_finish_refuses_while_the_cluster_is_stopped(boom, capsys):
    """An exam finished while the cluster was stopped used to be locked at 0%."""
    exam.start(boom, ["calm"], duration=30)
    boom.down(progress=lambda m: None)
    msg = (f"The exam is not graded: cluster '{REL}' is stopped, and every check reads it. Start it with "
           f"'ckalab up --name {REL}', then run 'ckalab exam finish' again; until then the exam stays open.")
    with pytest.raises(ClusterNotRunning) as exc:
        exam.finish(boom)
    assert str(exc.value) == msg
    assert cli.main(["exam", "finish", "--name", REL]) == 2
    assert capsys.readouterr().err == f"error: {msg}\n"
    assert exam.running(exam.load_state()) and not (exam.exam_dir() / "report.json").exists()
    boom.up(progress=lambda m: None)
    report = exam.finish(boom)
    assert report["total"]["percent"] == 100.0 and report["total"]["passed"]


def test_exam_is_not_graded_when_the_api_server_dies_while_grading(boom, monkeypatch):
    exam.start(boom, ["boom"], duration=30)
    monkeypatch.setenv("BOOM_KILL", "1")
    with pytest.raises(ClusterNotRunning, match="is degraded while the exam was being graded"):
        exam.finish(boom)
    assert exam.running(exam.load_state())
    monkeypatch.delenv("BOOM_KILL")
    _restart(boom)
    assert exam.finish(boom)["total"]["percent"] == 100.0


def test_a_learners_kubeconfig_still_works_after_a_restart(rel):
    """The kubeconfig lab used to drop from 13/13 to 8/13 after `down` + `up`: the file the
    learner wrote names the API server's port, which moved."""
    from ckalab import grading

    lab = labs.load("kubeconfig")
    rel.up(progress=lambda m: None)
    labs.reset(lab, rel)
    labs.solve(lab, rel)
    before = grading.run(lab, rel)
    assert before.passed and before.score == 13, before.render()
    for _ in range(2):
        rel.down(progress=lambda m: None)
        rel.up(progress=lambda m: None)
        after = grading.run(lab, rel)
        assert after.passed and after.score == 13, after.render()
    labs.reset(lab, rel)
