"""security-contexts on real nodes: every case of test_security_contexts.py again, where the pods
really run, so the two exec checks (`id -u`, CapEff in /proc/1/status) are graded too; plus what
only real containers show: a pod that is still starting is waited for, and one that cannot start
is named with its reason. Skipped unless CKALAB_REAL_NODES=1 (root).

    CKALAB_REAL_NODES=1 CKALAB_TEST_HOME=/tmp/ckt-x CKALAB_TEST_KEEP=1 \\
        .venv/bin/pytest tests/labs/test_security_contexts_real.py -x -q

That a SYS_TIME container keeps cap_sys_time in CapEff while `date -s` fails in it is proven in
tests/test_real_nodes.py (the nodes' clock filter); the grader only reads capabilities.
"""

from __future__ import annotations

import subprocess

import pytest
from conftest import VENV_BIN, check_of
from test_security_contexts import *  # noqa: F403 - the kwok module's cases, collected here on real nodes
from test_security_contexts import EXEC_CHECKS, LAB, cap_pod, failed_ids, pod, replace, solve_all_but

from ckalab import grading, labs
from ckalab.waiting import WaitTimeout, wait_for

STARTING = ("ContainerCreating", "PodInitializing")


def _kubectl(cluster, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([f"{VENV_BIN}/kubectl", f"--kubeconfig={cluster.kubeconfig}", *args],
                          capture_output=True, text=True, timeout=120)


def _pod_names(lab) -> list[str]:
    return [lab.params[k] for k in ("web_pod", "multi_pod", "cap_pod")]


def _settled(kube, lab) -> bool:
    """Every container of the lab's pods runs, or is not about to (a pull or start that failed)."""
    for name in _pod_names(lab):
        p = kube.get("v1", "Pod", name, lab.params["namespace"])
        if p is None:
            continue
        statuses = (p.get("status") or {}).get("containerStatuses") or []
        if len(statuses) < len(p["spec"]["containers"]):
            return False
        if any((s.get("state") or {}).get("waiting", {}).get("reason") in STARTING for s in statuses):
            return False
    return True


@pytest.fixture
def lab_harness(real_lab_harness, real_nodes):
    """The kwok module's lab_harness on real nodes. Its `sleep` pods ignore SIGTERM (PID 1), so
    the lab's pods are deleted with a 1 s grace period before the reset (which would wait 30 s);
    grade() first lets just-created pods start, as a learner would before checking."""
    def make(lab_id: str, seed: str | None = None):
        lab = labs.load(lab_id, seed)
        _kubectl(real_nodes, "delete", "pod", "-n", lab.params["namespace"], "--now", "--ignore-not-found",
                 *_pod_names(lab))
        h = real_lab_harness(lab_id, seed)
        grade = h.grade

        def settled_grade():
            try:
                wait_for(lambda: _settled(h.kube, h.lab), 90, "the lab's pods to start")
            except WaitTimeout:
                pass  # the grade says what is wrong
            return grade()
        h.grade = settled_grade
        return h
    return make


def test_exec_checks_wait_for_a_pod_that_is_still_starting(lab_harness):
    """Graded the moment the capabilities pod is created: the exec checks wait for it to start."""
    h = lab_harness(LAB)
    solve_all_but(h, "caps")
    h.grade()  # the other pods started
    cap_pod(h, {"capabilities": {"add": ["SYS_TIME", "NET_ADMIN"]}})
    r = grading.run(h.lab, h.cluster)  # no wait of the harness in between
    assert r.passed and r.score == 22, r.render()
    assert EXEC_CHECKS <= {c.id for c in r.checks if c.state == "passed"}


def test_the_running_containers_show_the_users_and_capabilities(lab_harness):
    """What the exec checks read, read here too: the kernel's view of the reference solution."""
    h = lab_harness(LAB)
    h.solve()
    assert h.grade().passed
    exec_ = ["exec", "-n", "default"]
    assert h.kubectl(*exec_, "web-pod", "--", "id", "-u").stdout.strip() == "1001"
    assert h.kubectl(*exec_, "multi-pod", "-c", "web", "--", "id", "-u").stdout.strip() == "1002"
    assert h.kubectl(*exec_, "multi-pod", "-c", "sidecar", "--", "id", "-u").stdout.strip() == "1001"
    cap_eff = h.kubectl(*exec_, "ubuntu-sleeper", "--", "grep", "CapEff", "/proc/1/status").stdout.split()[-1]
    assert int(cap_eff, 16) >> 25 & 1 and int(cap_eff, 16) >> 12 & 1  # cap_sys_time, cap_net_admin


def test_a_pod_that_cannot_start_is_named_with_its_reason(lab_harness):
    """Right specs, but the web pod's image is not in the cluster's registry: the exec check says
    which container does not run and why, instead of waiting or crashing."""
    h = lab_harness(LAB)
    solve_all_but(h, "web")
    manifest = pod("web-pod", [("web-pod", None)], {"runAsUser": 1001}).replace('"ubuntu"', '"ubuntu:no-such-tag"')
    replace(h, manifest)
    r = h.grade()
    assert failed_ids(r) == {"test_running_users"}, r.render()
    message = check_of(r, "test_running_users").message
    assert message.startswith("Pod 'web-pod': container 'web-pod' does not run (ErrImagePull") or message.startswith(
        "Pod 'web-pod': container 'web-pod' does not run (ImagePullBackOff"), message
    assert message.endswith("so `id -u` cannot be run in it. Look: kubectl describe pod web-pod -n default"), message
