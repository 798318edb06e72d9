"""kind/noclock-policy.yaml and kind/noclock.json: what the kind backend installs so that no lab
pod can set the clock of the computer kind runs on. kind cannot run here (no Docker), so the
admission policies are judged by a real API server (the test cluster's): copies bound to a test
namespace only, created with server-side dry runs. The profile is checked against the syscalls
the real local nodes refuse."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml
from conftest import VENV_BIN

from ckalab.cluster.nodes.noclock import CLOCK_SYSCALLS
from ckalab.kube import Kube
from ckalab.labs import REPO
from ckalab.waiting import wait_for

NS = "noclock-test"
PROFILE = {"type": "Localhost", "localhostProfile": "ckalab/noclock.json"}


def test_the_profile_refuses_exactly_the_clock_syscalls_the_real_nodes_refuse():
    profile = json.loads((REPO / "kind" / "noclock.json").read_text())
    assert profile["defaultAction"] == "SCMP_ACT_ALLOW"
    assert profile["syscalls"] == [{"names": list(CLOCK_SYSCALLS), "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]


@pytest.fixture(scope="module")
def policies(cluster):
    """The kind policies, renamed and bound to namespace noclock-test only."""
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))

    def kubectl(*args, input=None):
        return subprocess.run([f"{VENV_BIN}/kubectl", *args], env=env, input=input, capture_output=True, text=True,
                              timeout=60)
    docs = list(yaml.safe_load_all((REPO / "kind" / "noclock-policy.yaml").read_text()))
    for d in docs:
        d["metadata"]["name"] += "-test"
        if d["kind"].endswith("Binding"):
            d["spec"]["policyName"] += "-test"
            d["spec"]["matchResources"] = {"namespaceSelector": {"matchLabels": {"ckalab.io/noclock-test": "1"}}}
    kubectl("create", "namespace", NS)
    kubectl("label", "namespace", NS, "ckalab.io/noclock-test=1", "--overwrite")
    Kube(cluster.kubeconfig).apply_all(docs)  # as the kind backend installs them

    def create(pod: dict) -> subprocess.CompletedProcess:
        return kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(pod))
    def active() -> bool:  # each policy is compiled and picked up a moment after it is created
        mutated = create(pod_with())
        return ("privileged containers are refused" in create(pod_with({"privileged": True})).stderr
                and mutated.returncode == 0 and '"localhostProfile": "ckalab/noclock.json"' in mutated.stdout)
    wait_for(active, 60, "the admission policies to take effect")
    yield create
    kubectl("delete", "-f", "-", "--ignore-not-found", input=yaml.safe_dump_all(docs))
    kubectl("delete", "namespace", NS)


def pod_with(container_sc: dict | None = None, pod_sc: dict | None = None) -> dict:
    container = {"name": "c", "image": "busybox:1.36", **({"securityContext": container_sc} if container_sc else {})}
    spec = {"containers": [container], **({"securityContext": pod_sc} if pod_sc else {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "clock", "namespace": NS}, "spec": spec}


SYS_TIME = {"capabilities": {"add": ["SYS_TIME", "NET_ADMIN"]}}


def test_a_pod_without_a_profile_gets_the_noclock_profile_and_keeps_sys_time(policies):
    made = policies(pod_with(SYS_TIME))
    assert made.returncode == 0, made.stderr
    spec = json.loads(made.stdout)["spec"]
    assert spec["securityContext"]["seccompProfile"] == PROFILE
    assert spec["containers"][0]["securityContext"]["capabilities"]["add"] == ["SYS_TIME", "NET_ADMIN"]


def test_a_pod_level_profile_of_its_own_is_kept_when_nothing_can_set_the_clock(policies):
    made = policies(pod_with({"runAsUser": 1000}, {"seccompProfile": {"type": "RuntimeDefault"}}))
    assert made.returncode == 0, made.stderr
    assert json.loads(made.stdout)["spec"]["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("container_sc, pod_sc", [
    ({**SYS_TIME, "seccompProfile": {"type": "Unconfined"}}, None),
    (SYS_TIME, {"seccompProfile": {"type": "RuntimeDefault"}}),
    ({"capabilities": {"add": ["ALL"]}}, {"seccompProfile": {"type": "Localhost", "localhostProfile": "mine.json"}}),
], ids=["unconfined-container", "pod-runtime-default", "all-caps-other-profile"])
def test_a_container_that_could_set_the_clock_is_refused(policies, container_sc, pod_sc):
    made = policies(pod_with(container_sc, pod_sc))
    assert made.returncode != 0
    assert ("a container that adds SYS_TIME must keep the seccomp profile Localhost ckalab/noclock.json"
            in made.stderr), made.stderr


def test_privileged_containers_are_refused_with_what_to_do_instead(policies):
    made = policies(pod_with({"privileged": True}, {"seccompProfile": PROFILE}))
    assert made.returncode != 0
    assert ("privileged containers are refused on this lab cluster. A privileged container runs without seccomp "
            "and could set the clock of the computer kind runs on. Add the capabilities the task asks for instead "
            "(securityContext.capabilities.add)") in made.stderr, made.stderr


def test_sys_time_with_the_noclock_profile_named_explicitly_is_allowed(policies):
    made = policies(pod_with({**SYS_TIME, "seccompProfile": PROFILE}))
    assert made.returncode == 0, made.stderr
