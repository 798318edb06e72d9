"""kubeconfig grader: the reference and other correct files pass; broken files fail with their message."""

import yaml
from conftest import check_of, failed_ids

from ckalab import pki
from ckalab.waiting import wait_for

LAB = "kubeconfig"
LOGIN_CHECKS = {"test_authenticates_as_user", "test_lists_pods"}


def admin(h) -> dict:
    return yaml.safe_load(h.cluster.kubeconfig.read_text())


def server(h) -> str:
    return admin(h)["clusters"][0]["cluster"]["server"]


def kubeconfig(h, cluster=None, user=None, context=None, current="jane@lab") -> str:
    """A hand-written jane.kubeconfig; parts replace the correct defaults (relative paths)."""
    cfg = {
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": "lab", "cluster": cluster or {"server": server(h), "certificate-authority": "ca.crt"}}],
        "users": [{"name": "jane", "user": user or {"client-certificate": "jane.crt", "client-key": "jane.key"}}],
        "contexts": [{"name": "jane@lab", "context": context or {"cluster": "lab", "user": "jane",
                                                                 "namespace": "finance"}}],
    }
    return yaml.safe_dump(cfg)


def grade_file(h, text: str | bytes):
    h.write("jane.kubeconfig", text)
    return h.grade()


def test_fresh_start_fails_naming_every_check(lab_harness):
    h = lab_harness(LAB)
    r = h.grade()
    assert not r.passed and r.score == 0
    assert failed_ids(r) == {c.id for c in r.checks}
    assert check_of(r, "test_file_parses").message == (
        f"jane.kubeconfig not found in {h.workdir}: the kubeconfig file goes there, under that name. "
        f"Look: ls {h.workdir}")
    assert check_of(r, "test_user_entry").message == 'Not checked yet: first fix "the kubeconfig file exists and parses".'
    assert check_of(r, "test_authenticates_as_user").message == 'Not checked yet: first fix "cluster entry: server and CA".'
    # setup issued a real certificate for jane, signed by the CA it handed out
    cert, ca = pki.load_cert(h.workdir / "jane.crt"), pki.load_cert(h.workdir / "ca.crt")
    assert pki.describe(cert).subject_cn == "jane" and pki.signed_by(cert, ca)
    assert pki.key_matches(pki.load_key(h.workdir / "jane.key"), cert)


def test_reference_solution_passes(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    r = h.grade()
    assert r.passed, r.render()
    assert r.score == r.max_score == 13


def test_relative_paths_without_kind_pass(lab_harness):
    """Files by relative path (resolved against the kubeconfig's directory) and no kind field."""
    h = lab_harness(LAB)
    text = kubeconfig(h).replace("kind: Config\n", "")
    assert "kind" not in text
    r = grade_file(h, text)
    assert r.passed, r.render()


def test_kubectl_config_with_absolute_paths_and_extra_context_passes(lab_harness):
    """kubectl config without --embed-certs, absolute paths, and an unused second context."""
    h = lab_harness(LAB)
    w = h.workdir
    h.sh(f"""
k="kubectl config --kubeconfig=jane.kubeconfig"
$k set-cluster lab --server={server(h)} --certificate-authority={w}/ca.crt
$k set-credentials jane --client-certificate={w}/jane.crt --client-key={w}/jane.key
$k set-context scratch --cluster=lab --user=jane
$k set-context jane@lab --cluster=lab --user=jane --namespace=finance
$k use-context jane@lab
""")
    r = h.grade()
    assert r.passed, r.render()


def test_admin_credentials_fail_saying_who(lab_harness):
    h = lab_harness(LAB)
    a = admin(h)["users"][0]["user"]
    r = grade_file(h, kubeconfig(h, user={k: a[k] for k in ("client-certificate-data", "client-key-data")}))
    assert failed_ids(r) == LOGIN_CHECKS
    assert check_of(r, "test_authenticates_as_user").message == (
        "jane.kubeconfig logs in as 'kubernetes-admin' (groups: kubeadm:cluster-admins, system:authenticated), "
        "not as 'jane': its user entry must carry jane.crt and jane.key, not someone else's credentials.")
    assert check_of(r, "test_lists_pods").message == 'Not checked yet: first fix "the file logs in as the user".'


def test_context_without_namespace_fails(lab_harness):
    h = lab_harness(LAB)
    r = grade_file(h, kubeconfig(h, context={"cluster": "lab", "user": "jane"}))
    assert failed_ids(r) == {"test_context"} | LOGIN_CHECKS
    assert check_of(r, "test_context").message == (
        "Context 'jane@lab' in jane.kubeconfig has namespace: (not set); expected finance. "
        "Look: kubectl config get-contexts --kubeconfig=jane.kubeconfig")


def test_missing_current_context_fails(lab_harness):
    h = lab_harness(LAB)
    r = grade_file(h, kubeconfig(h, current=""))
    assert failed_ids(r) == {"test_context"} | LOGIN_CHECKS
    assert check_of(r, "test_context").message == (
        "current-context in jane.kubeconfig is ''; expected 'jane@lab'. "
        "Look: kubectl config current-context --kubeconfig=jane.kubeconfig")


def test_unreachable_server_fails_clearly(lab_harness):
    h = lab_harness(LAB)
    r = grade_file(h, kubeconfig(h, cluster={"server": "https://127.0.0.1:1", "certificate-authority": "ca.crt"}))
    assert failed_ids(r) == LOGIN_CHECKS
    assert check_of(r, "test_authenticates_as_user").message == (
        "Cannot connect to https://127.0.0.1:1 with jane.kubeconfig: connection refused. Is the server URL "
        f"right? The lab's API server is {server(h)}.")


def test_wrong_ca_fails_clearly(lab_harness):
    h = lab_harness(LAB)
    h.sh('openssl req -x509 -newkey rsa:2048 -nodes -keyout other-ca.key -subj "/CN=other-ca" -days 1 '
         '-out other-ca.crt 2>/dev/null')
    r = grade_file(h, kubeconfig(h, cluster={"server": server(h), "certificate-authority": "other-ca.crt"}))
    assert failed_ids(r) == LOGIN_CHECKS
    assert check_of(r, "test_authenticates_as_user").message == (
        f"TLS verification of {server(h)} failed with the CA in jane.kubeconfig: it is not the CA that signed "
        "the API server's certificate (the cluster CA is CN=kubernetes, as in ca.crt). "
        "Look: kubectl config view --raw --kubeconfig=jane.kubeconfig")


def test_self_signed_client_certificate_is_rejected(lab_harness):
    h = lab_harness(LAB)
    h.sh('openssl req -x509 -key jane.key -subj "/CN=jane" -days 1 -out self-signed.crt')
    r = grade_file(h, kubeconfig(h, user={"client-certificate": "self-signed.crt", "client-key": "jane.key"}))
    assert failed_ids(r) == LOGIN_CHECKS
    assert check_of(r, "test_authenticates_as_user").message == (
        f"The API server at {server(h)} rejected the client certificate in jane.kubeconfig (401 Unauthorized): "
        "the certificate must be signed by the cluster CA.")


def test_mismatched_key_and_missing_file_fail(lab_harness):
    h = lab_harness(LAB)
    h.sh("openssl genrsa -out other.key 2048 2>/dev/null")
    r = grade_file(h, kubeconfig(h, user={"client-certificate": "jane.crt", "client-key": "other.key"}))
    assert failed_ids(r) == {"test_user_entry"} | LOGIN_CHECKS
    assert check_of(r, "test_user_entry").message == (
        "In user 'jane' of jane.kubeconfig, the client-key does not belong to the client-certificate (CN=jane); "
        "expected jane.crt with jane.key. Look: kubectl config view --kubeconfig=jane.kubeconfig")
    r = grade_file(h, kubeconfig(h, cluster={"server": server(h), "certificate-authority": "certs/ca.crt"}))
    assert failed_ids(r) == {"test_cluster_entry"} | LOGIN_CHECKS
    assert check_of(r, "test_cluster_entry").message == (
        f"certificate-authority of cluster 'lab' in jane.kubeconfig (certs/ca.crt) not found (looked for "
        f"{h.workdir}/certs/ca.crt). Relative paths count from the kubeconfig's directory; the CA certificate "
        f"ca.crt is in {h.workdir}.")


def test_insecure_skip_tls_verify_fails(lab_harness):
    h = lab_harness(LAB)
    r = grade_file(h, kubeconfig(h, cluster={"server": server(h), "insecure-skip-tls-verify": True}))
    assert check_of(r, "test_cluster_entry").message == (
        "cluster 'lab' in jane.kubeconfig sets insecure-skip-tls-verify: the client would trust any server, "
        "including an impostor; the task asks to trust the cluster through ca.crt. "
        "Look: kubectl config view --kubeconfig=jane.kubeconfig")


def test_malformed_files_fail_clearly(lab_harness):
    h = lab_harness(LAB)
    cases = {
        b"\x89PNG\r\n\x1a\n\x00\x00binary": "jane.kubeconfig is not a text file: a kubeconfig is YAML. "
                                             "Look at it with: cat jane.kubeconfig",
        "clusters:\n- name: lab\n  cluster: {server: x\n": "jane.kubeconfig is not valid YAML at line 4, column 1: "
            "expected ',' or '}', but got '<stream end>'. kubectl config view --kubeconfig=jane.kubeconfig shows "
            "what kubectl makes of it.",
        "- just\n- a list\n": "jane.kubeconfig does not hold a kubeconfig: expected a mapping with clusters, users "
                             "and contexts, found list.",
        "": "jane.kubeconfig does not hold a kubeconfig: expected a mapping with clusters, users and contexts, "
            "found an empty document.",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n": "jane.kubeconfig has kind: Pod; a kubeconfig has kind: Config.",
    }
    for content, message in cases.items():
        r = grade_file(h, content)
        assert failed_ids(r) == {c.id for c in r.checks}
        assert check_of(r, "test_file_parses").message == message


def _state(h):
    files = {p.name: p.read_bytes() for p in h.workdir.iterdir() if p.suffix in (".crt", ".key")}
    csrs = [c["metadata"]["name"] for c in h.kube.list("certificates.k8s.io/v1", "CertificateSigningRequest",
                                                       label_selector="ckalab.io/lab=kubeconfig")]
    pods = {p["metadata"]["name"]: p["metadata"]["uid"] for p in h.kube.list("v1", "Pod", "finance")}
    return files, csrs, pods


def test_start_twice_equals_once(lab_harness):
    h = lab_harness(LAB)
    before = _state(h)
    # the request that issued jane.crt is removed once the certificate is saved
    assert set(before[0]) == {"ca.crt", "jane.crt", "jane.key"} and before[1] == []
    h.start()
    assert _state(h) == before


def test_start_reissues_a_certificate_the_cluster_ca_did_not_sign(lab_harness):
    h = lab_harness(LAB)
    h.sh('openssl req -x509 -key jane.key -subj "/CN=jane" -days 1 -out jane.crt')
    h.start()
    cert = pki.load_cert(h.workdir / "jane.crt")
    assert pki.signed_by(cert, pki.load_cert(h.workdir / "ca.crt"))
    assert pki.key_matches(pki.load_key(h.workdir / "jane.key"), cert)


def test_reset_replaces_changed_lab_objects_and_keeps_untouched_pods(lab_harness):
    """reset removes the lab's objects and setup makes them again, but a pod setup made that
    nobody changed stays as it is (on real nodes a pod made again costs a sandbox, a container
    and a policy sync): here the relabelled pod goes, its twin stays. The learner's own pod is
    never removed."""
    h = lab_harness(LAB)
    h.solve()

    def pod(name):
        return h.kube.get("v1", "Pod", name, "finance")

    def running(p):
        return p and p["status"].get("phase") == "Running" and all(c.get("ready") for c in p["status"].get("containerStatuses") or [{}])
    wait_for(lambda: running(pod("ledger")) and running(pod("invoices")), 120, "the lab's pods to run")
    uids = {name: pod(name)["metadata"]["uid"] for name in ("ledger", "invoices")}
    try:
        h.kubectl("run", "learners-pod", "--image=nginx", "-n", "finance")
        h.kubectl("label", "pod", "ledger", "-n", "finance", "tier=changed")
        crt = (h.workdir / "jane.crt").read_bytes()
        removed = h.reset()
        assert sorted(removed) == ["Pod/ledger", "Role/pod-reader", "RoleBinding/jane-pod-reader"]
        assert pod("invoices")["metadata"]["uid"] == uids["invoices"]
        assert pod("ledger")["metadata"]["uid"] != uids["ledger"] and "tier" not in pod("ledger")["metadata"]["labels"]
        assert h.kube.get("v1", "Pod", "learners-pod", "finance") is not None
        assert h.kube.get("v1", "Namespace", "finance") is not None
        assert (h.workdir / "jane.crt").read_bytes() == crt  # still valid: not issued again
        assert h.grade().passed  # the learner's file keeps working after a reset
    finally:
        h.kubectl("delete", "pod", "learners-pod", "-n", "finance", "--ignore-not-found", "--wait=false")
