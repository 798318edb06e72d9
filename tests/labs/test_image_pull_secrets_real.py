"""image-pull-secrets on real nodes: the registry is real (htpasswd login, TLS from the cluster
CA, reached by the nodes under the task's host name), so the grader's pull check sees what the
kubelet really did. Skipped unless CKALAB_REAL_NODES=1 (root).

    CKALAB_REAL_NODES=1 CKALAB_TEST_HOME=/tmp/ckt-x CKALAB_TEST_KEEP=1 \\
        .venv/bin/pytest tests/labs/test_image_pull_secrets_real.py -x -q
"""

from __future__ import annotations

import json

import pytest
from conftest import check_of, failed_ids

from ckalab import labs
from ckalab.waiting import wait_for

LAB = "image-pull-secrets"
PULL = "test_pods_pull_the_image"


@pytest.fixture
def lab(real_lab_harness):
    return lambda seed=None: real_lab_harness(LAB, seed)


def pod_events(h) -> str:
    p = h.params
    return h.kubectl("get", "events", "-n", p["namespace"], "-o", "jsonpath={.items[*].message}").stdout


def docker_secret(h, password: str) -> None:
    p = h.params
    h.sh(f"kubectl create secret docker-registry {p['secret']} -n {p['namespace']} --docker-server={p['server']} "
         f"--docker-username={p['username']} --docker-password='{password}' --dry-run=client -o yaml | kubectl apply -f -")


def restart(h) -> None:
    p = h.params
    h.kubectl("rollout", "restart", f"deployment/{p['deployment']}", "-n", p["namespace"])


def test_without_credentials_the_registry_really_refuses(lab):
    h = lab()
    p = h.params
    # The kubelet really asked the registry and was turned away (no login sent).
    wait_for(lambda: "authorization failed" in pod_events(h) or "401 Unauthorized" in pod_events(h), 60,
             "the pods' pulls to be refused")
    r = h.grade()
    assert PULL in failed_ids(r)
    assert check_of(r, PULL).message == (
        "Not checked yet: first fix \"Deployment's pods are set up to get the pull secret, for the task's image\".")


@pytest.mark.parametrize("seed", [None, "student-3"])
def test_reference_solution_pulls_and_runs(lab, seed):
    h = lab(seed)
    assert labs.backend_note(h.lab, h.cluster) == ""  # `ckalab start` says nothing is left out here
    h.solve()
    r = h.grade()
    assert r.passed, r.render()
    assert check_of(r, PULL).state == "passed"


def test_the_serviceaccount_route_pulls_too(lab):
    h = lab()
    p = h.params
    docker_secret(h, p["password"])
    h.kubectl("patch", "serviceaccount", "default", "-n", p["namespace"], "-p",
              json.dumps({"imagePullSecrets": [{"name": p["secret"]}]}))
    try:
        restart(h)
        h.kubectl("rollout", "status", f"deployment/{p['deployment']}", "-n", p["namespace"], "--timeout=60s")
        r = h.grade()
        assert r.passed, r.render()
    finally:  # the default ServiceAccount is not the lab's: take the reference back out
        h.kubectl("patch", "serviceaccount", "default", "-n", p["namespace"], "--type=json",
                  "-p", '[{"op": "remove", "path": "/imagePullSecrets"}]', check=False)


def test_a_wrong_password_is_refused_by_the_registry(lab):
    h = lab()
    p = h.params
    h.solve()
    docker_secret(h, "not-the-password")
    restart(h)
    r = h.grade()
    assert PULL in failed_ids(r) and "test_secret_credentials" in failed_ids(r)
    msg = check_of(r, PULL).message
    assert msg.startswith(f"Pod '{p['deployment']}-") and " could not pull its image: " in msg, msg
    assert "401 Unauthorized" in msg
    assert msg.endswith(f"The registry {p['server']} refused the pull: look at the credentials in Secret "
                        f"'{p['secret']}' (kubectl get secret {p['secret']} -n {p['namespace']} -o "
                        "jsonpath='{.data.\\.dockerconfigjson}' | base64 -d) and at the pod's events (kubectl "
                        f"describe pod {msg.split(chr(39))[1]} -n {p['namespace']}). A pod in back-off tries "
                        "again with the Secret's current contents only when its back-off ends."), msg
