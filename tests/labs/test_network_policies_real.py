"""network-policies on real nodes: every case of test_network_policies.py again, where the pods
run agnhost and kube-router enforces the policies, so the real-traffic check is graded too; plus
what only real traffic shows: a rejected connection (kube-router answers with ICMP
port-unreachable, which a client sees as a refusal) counts as blocked only when the destination
really listens, and a destination that serves nothing is named. Skipped unless
CKALAB_REAL_NODES=1 (root).

    CKALAB_REAL_NODES=1 CKALAB_TEST_HOME=/tmp/ckt-x CKALAB_TEST_KEEP=1 \\
        .venv/bin/pytest tests/labs/test_network_policies_real.py -x -q
"""

from __future__ import annotations

import pytest
from conftest import check_of
from test_network_policies import *  # noqa: F403 - the kwok module's cases, collected here on real nodes
from test_network_policies import LAB, REAL, WAITING, _remove_extras, graded  # noqa: F401 - its autouse fixture too



@pytest.fixture
def lab_harness(real_lab_harness):
    return real_lab_harness


def test_the_reference_solution_passes_with_real_connections(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    r = h.grade()
    assert r.passed and REAL in graded(r), r.render()
    assert check_of(r, REAL).points == 2


def test_without_the_policy_the_real_check_waits_for_the_policy_checks(lab_harness):
    h = lab_harness(LAB)
    r = h.grade()
    assert not check_of(r, REAL).passed and check_of(r, REAL).message == WAITING


def test_a_db_that_serves_nothing_on_its_port_is_named(lab_harness):
    """The policy is right, but db listens elsewhere: every probe to it is refused, from inside
    the pod too, which is not the policy's doing."""
    h = lab_harness(LAB)
    p = h.params
    h.kubectl("delete", "pod", p["db_pod"], "-n", p["namespace"], "--now")
    h.apply(f"""
apiVersion: v1
kind: Pod
metadata:
  name: '{{{{ db_pod }}}}'
  namespace: '{{{{ namespace }}}}'
  labels: {{role: '{{{{ db_role }}}}', ckalab.io/lab: {LAB}}}
  annotations: {{ckalab.io/spec: elsewhere}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
    - name: app
      image: registry.k8s.io/e2e-test-images/agnhost:2.53
      args: [netexec, --http-port=9999]
      ports: [{{name: '{{{{ db_port_name }}}}', containerPort: {{{{ db_port }}}}, protocol: TCP}}]
""")
    h.kubectl("wait", "--for=condition=Ready", "pod", p["db_pod"], "-n", p["namespace"], "--timeout=120s")
    h.solve()
    r = h.grade()
    assert {c.id for c in r.checks if not c.passed} == {REAL}, r.render()
    msg = check_of(r, REAL).message
    assert msg.startswith("Real connections disagree with the task:\n"), msg
    ns, db, port = p["namespace"], p["db_pod"], p["db_port"]
    assert (f"- {ns}/{p['api_pod']} -> {ns}/{db} TCP/{port}: nothing listens there (refused from inside the pod "
            f"too): is {ns}/{db} running as setup made it? Look: kubectl get pods -n {ns}") in msg.splitlines()
    # Reset puts setup's db pod back (its spec annotation differs), and the reference passes again.
    h.reset()
    h.solve()
    assert h.grade().passed


def _connects(h, src: str, dst: str, port: int) -> bool:
    """`agnhost connect` from pod `src` to pod `dst` (both in the lab's namespace), as the grader does."""
    ns = h.params["namespace"]
    ip = h.kubectl("get", "pod", dst, "-n", ns, "-o", "jsonpath={.status.podIP}").stdout
    return h.kubectl("exec", "-n", ns, src, "--", "/agnhost", "connect", f"{ip}:{port}", "--timeout=2s",
                     check=False).returncode == 0


def test_a_policy_nothing_enforces_yet_fails_the_real_check_by_what_got_through(lab_harness):
    """The policy is right, but the engine has not enforced it (kube-router paused on every node,
    SIGSTOP, before the policy was stored: the status still counts it as running): the semantic
    checks pass, and real traffic names each route that should have been blocked. Once kube-router
    goes on, the same policy passes."""
    import os
    import signal

    from ckalab.cluster import nodes
    from ckalab.waiting import wait_for

    h = lab_harness(LAB)
    p = h.params
    ns, port = p["namespace"], int(p["db_port"])
    # No policy yet: once kube-router has dropped an earlier case's rules, everything connects.
    wait_for(lambda: _connects(h, p["web_pod"], p["db_pod"], port), 60, "web to reach db with no policy")
    rn = nodes.for_cluster(h.cluster)
    routers = [pid for n in rn.names() for pid in rn.main_pids(f"{n}/kube-router")]
    assert len(routers) == len(rn.names())
    for pid in routers:
        os.kill(pid, signal.SIGSTOP)
    try:
        h.solve()
        r = h.grade()
        assert {c.id for c in r.checks if not c.passed} == {REAL}, r.render()
        msg = check_of(r, REAL).message.splitlines()
        assert msg[0] == "Real connections disagree with the task:"
        db, web = f"{ns}/{p['db_pod']}", f"{ns}/{p['web_pod']}"
        assert msg[1:] == [
            f"- {web} -> {db} TCP/{port}: expected no connection, got a connection",
            f"- {p['other_namespace']}/{p['api_pod']} -> {db} TCP/{port}: expected no connection, got a connection",
            f"- {db} -> {web} TCP/80: expected no connection, got a connection",
        ]  # api -> db is allowed and connects: not named
    finally:
        for pid in routers:
            os.kill(pid, signal.SIGCONT)
    wait_for(lambda: h.grade().passed, 120, "kube-router to enforce the policy once it goes on")
