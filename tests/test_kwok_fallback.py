"""The fallback every learner without root (or without Linux) gets: the control plane as processes
and kwok nodes, where pods are only marked Running. CI runs the whole suite on real nodes
(CKALAB_TEST_NODES=real); this module switches its worker's cluster to kwok nodes and checks that
the fallback still does its job: pods schedule and "run", every lab that can run there passes with
its reference solution, the checks that need real containers are listed as unavailable (0 of 0
points) rather than failed or passed for free, and the labs that need real nodes are refused
with the command that starts them.
"""

from __future__ import annotations

import time

import pytest
from conftest import check_of

from ckalab import exam, labs
from ckalab.errors import CkalabError
from ckalab.kube import Kube
from ckalab.waiting import wait_for


@pytest.fixture(autouse=True)
def _on_kwok(kwok_nodes):
    yield


def test_the_cluster_runs_kwok_nodes_and_says_so(kwok_nodes):
    assert not kwok_nodes.offers("exec") and not kwok_nodes.offers("static-pods")
    assert kwok_nodes.offers("node-files")
    st = kwok_nodes.status()
    assert st.state == "running"
    assert "kwok" in [c.name for c in st.components]


def test_pods_schedule_on_kwok_nodes_and_run(kwok_nodes):
    kube = Kube(kwok_nodes.kubeconfig)
    nodes = {n.metadata.name for n in kube.core.list_node().items}
    assert nodes == {"controlplane", "node01", "node02"}
    name = f"probe-{int(time.time() * 1000)}"
    kube.apply({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": "default"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                         "template": {"metadata": {"labels": {"app": name}},
                                      "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})
    try:
        def running():
            pods = kube.core.list_namespaced_pod("default", label_selector=f"app={name}").items
            return len(pods) == 2 and all(p.status.phase == "Running" and p.status.pod_ip for p in pods) and pods
        pods = wait_for(running, 30, "2 pods Running")
        # The control-plane node keeps kubeadm's NoSchedule taint.
        assert {p.spec.node_name for p in pods} <= {"node01", "node02"}
    finally:
        kube.delete("apps/v1", "Deployment", name, "default")


# What each lab cannot grade on kwok nodes: its checks that need real containers.
UNAVAILABLE = {
    "security-contexts": {"test_running_users", "test_running_capabilities"},
    "network-policies": {"test_real_traffic"},
    "image-pull-secrets": {"test_pods_pull_the_image"},
    "service-accounts": {"test_dashboard_calls_the_api"},
}


# Which labs run without real nodes is decided by their essential needs (labs.runs_on).
KWOK_LABS = [i for i in labs.lab_ids() if not set(labs.load(i).needs) & set(labs.ESSENTIAL_NEEDS)]


@pytest.mark.parametrize("lab_id", KWOK_LABS)
def test_each_lab_that_runs_here_passes_with_its_reference_solution(lab_id, lab_harness):
    h = lab_harness(lab_id)
    h.solve()
    r = h.grade()
    assert r.passed and r.score == r.max_score > 0, r.render()
    unavailable = {c.id for c in r.checks if c.state == "unavailable"}
    assert unavailable == UNAVAILABLE.get(lab_id, set()), r.render()
    for check_id in unavailable:
        c = check_of(r, check_id)
        assert (c.points, c.max_points) == (0, 0) and c.message, c.message


def test_the_labs_that_need_real_nodes_are_refused_and_never_chosen(kwok_nodes):
    real_only = sorted(set(labs.lab_ids()) - set(KWOK_LABS))
    assert not any(labs.runs_on(labs.load(i), kwok_nodes) for i in real_only)
    assert set(real_only) >= {"apiserver-repair", "etcd-access", "audit-logging", "encryption-at-rest",
                              "admission-plugins", "cert-renewal", "kubelet-security"}
    with pytest.raises(CkalabError) as exc:
        labs.start(labs.load("apiserver-repair"), kwok_nodes)
    assert "--nodes real" in str(exc.value)
    chosen = exam.choose(None, None, None, kwok_nodes)
    assert not set(chosen) & set(real_only) and "rbac-role" in chosen
    with pytest.raises(CkalabError, match="need real nodes"):
        exam.choose(["rbac-role", "apiserver-repair"], None, None, kwok_nodes)
