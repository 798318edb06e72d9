"""service-accounts on real nodes: the dashboard's pods really call the API server with their
mounted token (kubecall in ckalab's busybox), so the grader sees what the account can do from
inside the cluster. Skipped unless CKALAB_REAL_NODES=1 (root).

    CKALAB_REAL_NODES=1 CKALAB_TEST_HOME=/tmp/ckt-x CKALAB_TEST_KEEP=1 \\
        .venv/bin/pytest tests/labs/test_service_accounts_real.py -x -q
"""

from __future__ import annotations

import pytest
from conftest import check_of, failed_ids

LAB = "service-accounts"
CALLS = "test_dashboard_calls_the_api"


@pytest.fixture
def lab(real_lab_harness):
    return lambda seed=None: real_lab_harness(LAB, seed)


def rollout(h) -> None:
    p = h.params
    h.kubectl("rollout", "status", f"deployment/{p['deployment']}", "-n", p["namespace"], "--timeout=90s")


@pytest.mark.parametrize("seed", [None, "student-5"])
def test_reference_solution_lists_pods_from_inside(lab, seed):
    h = lab(seed)
    h.solve()
    rollout(h)
    r = h.grade()
    assert r.passed, r.render()
    assert check_of(r, CALLS).state == "passed"


def test_a_clusterrole_bound_in_the_namespace_works_from_inside_too(lab):
    h = lab()
    p = h.params
    ns, sa = p["namespace"], p["sa"]
    h.kubectl("create", "serviceaccount", sa, "-n", ns)
    h.kubectl("create", "clusterrole", p["role"], "--verb=list,get,watch", "--resource=pods")
    try:
        h.kubectl("create", "rolebinding", p["binding"], f"--clusterrole={p['role']}", f"--serviceaccount={ns}:{sa}",
                  "-n", ns)
        h.kubectl("set", "serviceaccount", f"deployment/{p['deployment']}", sa, "-n", ns)
        rollout(h)
        r = h.grade()
        assert r.passed, r.render()
    finally:  # a ClusterRole is not swept by the lab's reset
        h.kubectl("delete", "clusterrole", p["role"], "--ignore-not-found")


def test_pods_that_run_as_an_unbound_account_are_refused(lab):
    h = lab()
    p = h.params
    ns, sa = p["namespace"], p["sa"]
    h.kubectl("create", "serviceaccount", sa, "-n", ns)
    h.kubectl("set", "serviceaccount", f"deployment/{p['deployment']}", sa, "-n", ns)
    rollout(h)
    r = h.grade()
    assert CALLS in failed_ids(r)
    msg = check_of(r, CALLS).message
    who = f"system:serviceaccount:{ns}:{sa}"
    assert msg.startswith(f"Pod '{p['deployment']}-"), msg
    assert msg.endswith(f"' asked the API server for the pods in '{ns}' with its mounted token and got 403: "
                        f"pods is forbidden: User \"{who}\" cannot list resource \"pods\" in API group \"\" in the "
                        f"namespace \"{ns}\". Look: kubectl auth can-i list pods --as {who} -n {ns}"), msg


def test_an_account_that_may_read_secrets_is_caught_from_inside(lab):
    h = lab()
    p = h.params
    ns = p["namespace"]
    h.solve()
    h.kubectl("create", "role", "extra-secrets", "--verb=list", "--resource=secrets", "-n", ns)
    h.kubectl("create", "rolebinding", "extra-secrets", "--role=extra-secrets",
              f"--serviceaccount={ns}:{p['sa']}", "-n", ns)
    try:
        rollout(h)
        r = h.grade()
        assert CALLS in failed_ids(r)
        msg = check_of(r, CALLS).message
        assert msg.endswith(f"' could read the secrets in '{ns}' with its token (HTTP 200): the account may do more "
                            f"than read pods. Look: kubectl auth can-i --list --as system:serviceaccount:{ns}:"
                            f"{p['sa']} -n {ns}"), msg
    finally:  # not labelled with the lab: a reset would leave them
        h.kubectl("delete", "rolebinding,role", "extra-secrets", "-n", ns, "--ignore-not-found")
