"""etcd-access grader, on real nodes (etcd a static pod on the controlplane node): the reference
and other correct answers pass; wrong answers fail with their pinned learner-facing message; etcd
made to accept anonymous requests fails the behaviour check, and the control plane is restored."""

import subprocess
import pytest
import yaml
from conftest import TEST_CLUSTER, check_of, failed_ids

from ckalab import labs
from ckalab.waiting import wait_for

LAB = "etcd-access"
PKI = "/etc/kubernetes/pki"
ALL = {"test_value", "test_secret_key", "test_why", "test_anonymous_refused"}


@pytest.fixture(scope="module")
def etcd_node(real_nodes):
    """The cluster on real nodes; the etcd manifest is ckalab's again afterwards."""
    yield real_nodes
    labs.restore_control_plane(real_nodes)


@pytest.fixture(autouse=True)
def on_real_nodes(request):
    """Every test here on real nodes (skipped without them), except the one for kwok nodes."""
    if request.node.name.startswith("test_on_kwok_nodes"):
        return None
    return request.getfixturevalue("etcd_node")


def test_on_kwok_nodes_the_etcd_checks_are_not_available(lab_harness, cluster):
    """Runs first, before the module switches to real nodes: no node to run etcdctl on, so the
    two etcd checks are left out (not failed) and the hand-written answers are graded."""
    if cluster.offers("node-shell"):
        pytest.skip("this session's cluster runs on real nodes")
    h = lab_harness(LAB)
    h.solve()  # degrades: no etcd-value.txt, the key from the layout
    r = h.grade()
    assert r.passed and r.score == r.max_score == 4, r.render()
    for cid in ("test_value", "test_anonymous_refused"):
        c = check_of(r, cid)
        assert c.state == "unavailable"
        assert c.message == "needs a controlplane node with a shell (ckalab up --nodes real, as root)"
    assert not (h.workdir / "etcd-value.txt").exists()


def etcdctl(h, *args, cert="apiserver-etcd-client"):
    url = h.cluster.component_flags("etcd")["listen-client-urls"]
    argv, env = h.cluster.shell("controlplane", [
        "etcdctl", f"--endpoints={url}", f"--cacert={PKI}/etcd/ca.crt", f"--cert={PKI}/{cert}.crt",
        f"--key={PKI}/{cert}.key", *args])
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=True).stdout


def anonymous_read(h) -> subprocess.CompletedProcess:
    url = h.cluster.component_flags("etcd")["listen-client-urls"]
    argv, env = h.cluster.shell("controlplane", ["etcdctl", f"--endpoints={url}", f"--cacert={PKI}/etcd/ca.crt",
                                                 "--dial-timeout=2s", "--command-timeout=3s", "get", "/x"])
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)


def stored_value(h) -> str:
    return etcdctl(h, "get", "--prefix", "/ckalab/etcd-access/", "--print-value-only").strip()


def answers(h, value=None, key=None, why=None):
    for name, text in (("etcd-value.txt", value), ("secret-key.txt", key), ("why.txt", why)):
        if text is not None:
            h.write(name, text)


def solved(h, **kw):
    """The right answers, with some replaced."""
    p = h.params
    right = {"value": stored_value(h) + "\n", "key": f"/registry/secrets/{p['namespace']}/{p['secret']}\n",
             "why": "b\n"}
    answers(h, **{**right, **kw})
    return h.grade()


def test_fresh_start_fails_naming_every_answer(lab_harness):
    h = lab_harness(LAB)
    r = h.grade()
    assert failed_ids(r) == {"test_value", "test_secret_key", "test_why"}
    assert check_of(r, "test_anonymous_refused").passed  # ckalab's etcd refuses strangers
    assert check_of(r, "test_value").message == (
        f"etcd-value.txt not found in {h.workdir}: the answer goes there, under that name. Look: ls {h.workdir}")
    # setup stored one value in etcd, under the note's key, and the Secret
    assert etcdctl(h, "get", "--prefix", "--keys-only", "/ckalab/").split() == ["/ckalab/etcd-access/launch-code"]
    assert len(stored_value(h)) == 20
    assert etcdctl(h, "get", "--keys-only", "/registry/secrets/payments/db-password").strip()


def test_reference_solution_passes_and_start_keeps_the_value(lab_harness):
    h = lab_harness(LAB)
    before = stored_value(h)
    h.solve()
    r = h.grade()
    assert r.passed, r.render()
    assert r.score == r.max_score == 9
    labs.start(h.lab, h.cluster)  # idempotent: the answer stays right
    assert stored_value(h) == before and h.grade().passed


@pytest.mark.parametrize("how", ["healthcheck-cert-and-spacing", "server-cert-json"])
def test_other_correct_forms_pass(lab_harness, how):
    h = lab_harness(LAB)
    if how == "healthcheck-cert-and-spacing":
        # etcd's own healthcheck client certificate (signed by etcd's CA) reads as well
        value = etcdctl(h, "get", "/ckalab/etcd-access/launch-code", "--print-value-only",
                        cert="etcd/healthcheck-client").strip()
        answers(h, value=f"  {value}  \n\n", key="/registry/secrets/payments/db-password", why="B)\n")
    else:
        # the learner's way on the node: ETCDCTL_* variables, JSON output decoded with base64
        h.sh(f"""export CKALAB_CLUSTER={TEST_CLUSTER}
ckalab ssh controlplane -- sh -ec '
  export ETCDCTL_ENDPOINTS=$(grep -o "listen-client-urls=[^,]*" /etc/kubernetes/manifests/etcd.yaml | cut -d= -f2)
  export ETCDCTL_CACERT={PKI}/etcd/ca.crt ETCDCTL_CERT={PKI}/etcd/server.crt ETCDCTL_KEY={PKI}/etcd/server.key
  etcdctl get /ckalab/etcd-access/launch-code -w json | grep -o "\\"value\\":\\"[^\\"]*\\"" | cut -d\\" -f4 | base64 -d > {h.workdir}/etcd-value.txt
  etcdctl get --prefix --keys-only /registry/secrets/payments | grep db-password > {h.workdir}/secret-key.txt'
echo b > why.txt""")
    r = h.grade()
    assert r.passed, r.render()


MUTATIONS = [
    # (id, answers replacing the right ones, failing check, pinned message)
    ("value-is-the-key", {"value": "/ckalab/etcd-access/launch-code\n"}, "test_value",
     "etcd-value.txt holds '/ckalab/etcd-access/launch-code', which looks like a key; the task asks for the value "
     "stored under it. Look at what etcdctl ... get KEY prints: the key's line, then its value."),
    ("value-is-the-secret", {"value": "correct-horse-battery-staple"}, "test_value",
     "etcd-value.txt holds 'correct-horse-battery-staple', which is not the value stored under /ckalab/ in etcd. "
     "Look: etcdctl ... get --prefix /ckalab/"),
    ("value-empty", {"value": "\n"}, "test_value",
     "etcd-value.txt is empty; it should hold the value stored under /ckalab/ in etcd."),
    ("key-singular-resource", {"key": "/registry/secret/payments/db-password"}, "test_secret_key",
     "secret-key.txt holds '/registry/secret/payments/db-password', which is not the key of Secret 'db-password' in "
     "namespace 'payments'. Look: etcdctl ... get --prefix --keys-only /registry/secrets/payments"),
    ("key-without-namespace", {"key": "/registry/secrets/db-password"}, "test_secret_key",
     "secret-key.txt holds '/registry/secrets/db-password', which is not the key of Secret 'db-password' in "
     "namespace 'payments'. Look: etcdctl ... get --prefix --keys-only /registry/secrets/payments"),
    ("key-kubectl-style", {"key": "payments/db-password"}, "test_secret_key",
     "secret-key.txt holds 'payments/db-password'; the API server keeps every object under the prefix /registry/ "
     "in etcd. Look: etcdctl ... get --prefix --keys-only /registry/ | grep db-password"),
    ("why-encryption-at-rest", {"why": "a"}, "test_why",
     "why.txt answers 'a', but certificates on a connection do not encrypt the files etcd writes; that is "
     "encryption at rest, a different setting. Read the statements in the task again."),
    ("why-users-talk-to-etcd", {"why": "c\n"}, "test_why",
     "why.txt answers 'c', but users never reach etcd: kubectl talks to the API server, and only the API server "
     "talks to etcd. Read the statements in the task again."),
    ("why-tls-needs-it", {"why": "D"}, "test_why",
     "why.txt answers 'd', but TLS works without client certificates (a browser has none); a client certificate "
     "is there to say who the client is. Read the statements in the task again."),
    ("why-two-letters", {"why": "b and c"}, "test_why",
     "why.txt holds 'b and c'; expected one letter, a, b, c or d."),
]


@pytest.mark.parametrize("case", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_wrong_answers_fail(lab_harness, case):
    _, wrong, check, message = case
    h = lab_harness(LAB)
    r = solved(h, **wrong)
    assert failed_ids(r) == {check}, r.render()
    assert check_of(r, check).message == message


def test_value_gone_from_etcd_and_reset_writes_a_new_one(lab_harness):
    h = lab_harness(LAB)
    old = stored_value(h)
    etcdctl(h, "del", "--prefix", "/ckalab/etcd-access/")
    r = solved(h, value=old)
    assert check_of(r, "test_value").message == (
        "Nothing is stored under /ckalab/etcd-access/ in etcd any more, so there is nothing to compare with; "
        "'ckalab reset etcd-access' writes a new value.")
    h.reset()
    assert stored_value(h) not in ("", old)


def test_etcd_accepting_anonymous_requests_fails_and_reset_restores(lab_harness):
    h = lab_harness(LAB)
    path = h.cluster.dir / "etc/kubernetes/manifests/etcd.yaml"
    doc = yaml.safe_load(path.read_text())
    cmd = doc["spec"]["containers"][0]["command"]
    # Both: with a trusted CA file etcd asks every client for a certificate whatever --client-cert-auth says.
    doc["spec"]["containers"][0]["command"] = [
        "--client-cert-auth=false" if a == "--client-cert-auth=true" else a for a in cmd
        if not a.startswith("--trusted-ca-file=")]
    assert solved(h).passed  # the right answers, written while etcd still answers
    try:
        # Put in the quick way (ckalab's own write: the kubelet's back-off for a file replaced in
        # place is not what this test is about); the API server then finds the new etcd again.
        h.cluster.write_manifests({path: yaml.safe_dump(doc).encode()})
        wait_for(lambda: anonymous_read(h).returncode == 0, 120, "etcd to accept anonymous requests")
        wait_for(lambda: h.cluster.status().state == "running", 120, "the API server to be ready again")
        r = h.grade()
        url = h.cluster.component_flags("etcd")["listen-client-urls"]
        assert failed_ids(r) == {"test_anonymous_refused"}, r.render()
        assert check_of(r, "test_anonymous_refused").message == (
            f"etcd at {url} answered a request that carried no client certificate: anyone on the node could read "
            "every Secret, bypassing the API server. etcd's manifest has --client-cert-auth=false and --trusted-ca-file=(not "
            "set). Look: grep -e "
            "client-cert-auth -e trusted-ca-file /etc/kubernetes/manifests/etcd.yaml")
        h.reset()  # restores ckalab's manifests and waits for a healthy control plane
        assert "--client-cert-auth=true" in path.read_text()
        assert h.grade().passed
    finally:
        labs.restore_control_plane(h.cluster)
