"""Backends come from one registry and say what they offer; labs, results and graders ask for
features, never for backend names. Scripts read a node's files through one verb on any backend."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ckalab import cluster as backends
from ckalab import labs, results
from ckalab.classroom import ExternalCluster
from ckalab.cluster.base import Cluster
from ckalab.cluster.local import LocalCluster
from ckalab.errors import CkalabError

CKALAB = str(Path(sys.executable).parent / "ckalab")


class RealNodeCluster(LocalCluster):
    """A stand-in for a new backend: registering it is all it takes to be chosen and graded."""
    backend = "realnodes"
    features = frozenset({"exec", "node-files"})


@pytest.fixture
def registered(monkeypatch):
    monkeypatch.setitem(backends.BACKENDS, "realnodes", f"{__name__}:RealNodeCluster")
    monkeypatch.setattr(backends, "AUTO_ORDER", ("realnodes", *backends.AUTO_ORDER))


def test_each_backend_declares_its_features():
    assert backends.features_of("local") == {"node-files"}
    assert backends.features_of("kind") >= {"exec", "traffic", "netpol-enforcement", "node-files"}
    assert backends.features_of("external") == frozenset()  # a shared cluster: nothing of its nodes
    assert not ExternalCluster("/nonexistent").offers("exec")
    assert all(issubclass(backends.backend_class(n), Cluster) for n in backends.BACKENDS)


def test_unknown_backend_names_the_registered_ones():
    with pytest.raises(CkalabError, match=r"Unknown backend 'docker': choose auto, local, kind\."):
        backends.choose_backend("docker")


def test_a_registered_backend_is_chosen_and_its_features_decide_the_lab_needs(registered):
    assert backends.choose_backend("auto") == "realnodes"
    c = backends.get_cluster("never-made", "realnodes")
    assert isinstance(c, RealNodeCluster) and c.offers("exec") and not c.offers("traffic")
    netpol, contexts = labs.load("network-policies"), labs.load("security-contexts")
    assert labs.lacking(contexts, c.features) == []
    assert labs.lacking(netpol, c.features) == ["netpol-enforcement"]
    assert labs.backend_note(contexts, "realnodes") == ""
    cat = results.Catalogue()
    assert cat.lacks("security-contexts", "realnodes") == [] and cat.lacks("security-contexts", "local") == ["exec"]


def _ckalab(*args, **env):
    return subprocess.run([CKALAB, *args], capture_output=True, env=dict(os.environ, **env), timeout=60)


def test_node_file_prints_a_control_plane_file(cluster):
    pki = Path(cluster.pki_dir)
    out = _ckalab("node-file", "ca.crt", CKALAB_CLUSTER=cluster.name)
    assert out.returncode == 0 and out.stdout == (pki / "ca.crt").read_bytes()
    manifest = pki.parent / "manifests" / "etcd.yaml"
    out = _ckalab("node-file", str(manifest), "--name", cluster.name)
    assert out.stdout == manifest.read_bytes()


def test_node_file_missing_is_a_clear_error(cluster):
    out = _ckalab("node-file", "nope.crt", "--name", cluster.name)
    assert out.returncode != 0 and b"Traceback" not in out.stderr
    assert f"Cannot read {cluster.pki_dir}/nope.crt: No such file or directory".encode() in out.stderr


def test_a_real_node_process_is_found_by_its_record_while_its_environment_is_blank(tmp_path):
    """In the middle of an exec (noclock -> nsenter -> kubelet) /proc/PID/environ can read empty
    for a moment; a restart that missed a kubelet so left two on one node. `env -i` keeps the
    blank for good: only the record made at spawn can find the process."""
    from types import SimpleNamespace

    from ckalab.cluster.local import procs
    from ckalab.cluster.nodes import RealNodes, stop_pids
    from ckalab.waiting import wait_for

    nodes = RealNodes(SimpleNamespace(dir=tmp_path / "c"))
    (tmp_path / "c" / "nodes").mkdir(parents=True)
    pid = nodes.spawn("node01/kubelet", ["env", "-i", "sleep", "60"], tmp_path / "kubelet.log")
    try:
        wait_for(lambda: procs.environ(pid) == {}, 10, "sleep to run with an empty environment")
        assert nodes.processes() == {"node01/kubelet": [pid]}
    finally:
        stop_pids([pid])
    assert nodes.processes() == {}
    assert list((tmp_path / "c" / "nodes" / "pids").iterdir()) == []  # the record of a stopped process goes


def test_real_node_processes_are_told_apart_by_their_markers_alone(tmp_path):
    """processes() reads only two variables of each environment (status polls scan every process
    of the machine): a process spawned for another cluster, or carrying a look-alike variable, is
    not this cluster's; a marked process with its record gone is still found by its marker."""
    from types import SimpleNamespace

    from ckalab.cluster.local import procs
    from ckalab.cluster.nodes import RealNodes, stop_pids

    ours, theirs = RealNodes(SimpleNamespace(dir=tmp_path / "a")), RealNodes(SimpleNamespace(dir=tmp_path / "a2"))
    for n in (ours, theirs):
        n.root.mkdir(parents=True)
    mine = ours.spawn("node01/containerd", ["sleep", "60"], tmp_path / "a.log")
    other = theirs.spawn("node01/containerd", ["sleep", "60"], tmp_path / "b.log")
    lookalike = subprocess.Popen(["sleep", "60"], env={"X" + procs.COMPONENT_ENV: "real-node:node01/kubelet",
                                                       procs.CLUSTER_ENV: str(tmp_path / "a")})
    try:
        for record in (ours.root / "pids").iterdir():
            record.unlink()  # found by the marker in its environment, not by the record
        assert ours.processes() == {"node01/containerd": [mine]}
        assert theirs.processes() == {"node01/containerd": [other]}
        raw = procs.environ_bytes(mine)
        assert procs.environ_value(raw, procs.CLUSTER_ENV) == str(tmp_path / "a")
        assert procs.environ_value(raw, procs.COMPONENT_ENV) == "real-node:node01/containerd"
        assert procs.environ_value(raw, "CKALAB_NOT_SET") is None
    finally:
        lookalike.kill()
        lookalike.wait()
        stop_pids([mine, other])
    assert ours.processes() == {} and theirs.processes() == {}
