"""csr-approval grader: the reference and other correct forms pass; each mistake fails with its message."""

import base64

from conftest import check_of, failed_ids

from ckalab.waiting import wait_for

LAB = "csr-approval"
CERTS = "certificates.k8s.io/v1"
ALL_AFTER_SPEC = {"test_csr_spec", "test_approved_issued", "test_certificate_works"}


def csr_yaml(name, request_b64, signer="kubernetes.io/kube-apiserver-client", usages="[client auth]", extra=""):
    signer_line = f"  signerName: {signer}\n" if signer else ""
    return (f"apiVersion: certificates.k8s.io/v1\nkind: CertificateSigningRequest\nmetadata: {{name: {name}}}\n"
            f"spec:\n  request: {request_b64}\n{signer_line}  usages: {usages}\n{extra}")


def b64_of(h, filename):
    return base64.b64encode((h.workdir / filename).read_bytes()).decode()


def create_csr(h, **kw):
    h.kubectl("create", "-f", "-", input=csr_yaml("akshay", kw.pop("request", None) or b64_of(h, "akshay.csr"), **kw))


def wait_decided(h, name):
    """Until the signer has acted on an approved request: issued a certificate or marked it Failed."""
    def done():
        st = h.kube.get(CERTS, "CertificateSigningRequest", name).get("status") or {}
        return st.get("certificate") or any(c["type"] == "Failed" for c in st.get("conditions") or [])
    wait_for(done, 30, f"the signer to act on CSR {name}")


def approve_and_deny(h):
    h.kubectl("certificate", "approve", "akshay")
    h.kubectl("certificate", "deny", "agent-smith")
    wait_decided(h, "akshay")


def openssl_new_key_and_csr(h, cn="akshay", key="akshay.key", csr="akshay.csr"):
    h.sh(f'openssl genrsa -out {key} 2048 2>/dev/null; openssl req -new -key {key} -subj "/CN={cn}" -out {csr}')


def delete_csrs(h, *names):
    h.kubectl("delete", "csr", "--ignore-not-found", *names)


def test_fresh_start_fails_naming_every_check(lab_harness):
    h = lab_harness(LAB)
    r = h.grade()
    assert not r.passed and r.score == 0
    assert failed_ids(r) == {c.id for c in r.checks}
    assert check_of(r, "test_csr_exists").message == (
        "CertificateSigningRequest 'akshay' not found (kubectl get csr). If kubectl rejected your manifest, its "
        "message says why; the usual causes: certificates.k8s.io/v1 requires spec.signerName, and spec.request "
        "must be the whole PEM file base64-encoded on one line.")
    assert check_of(r, "test_csr_spec").message == (
        'Not checked yet: first fix "CertificateSigningRequest for the user exists".')
    assert check_of(r, "test_certificate_works").message == (
        'Not checked yet: first fix "CertificateSigningRequest for the user exists".')
    assert check_of(r, "test_intruder_denied").message == (
        "CSR 'agent-smith' is still pending; look at the groups it asks for (kubectl get csr agent-smith -o "
        "jsonpath='{.spec.request}' | base64 -d | openssl req -noout -subject) and at what those groups may do "
        "(kubectl get clusterrolebindings -o wide).")
    assert "deny" not in check_of(r, "test_intruder_denied").message  # the answer is behind Hint
    assert check_of(r, "test_no_other_approved").message == (
        'Not checked yet: first fix "the request for the privileged group is denied".')
    # setup: the learner's files, and the intruder's request really asks for the admin group
    assert (h.workdir / "akshay.key").is_file() and (h.workdir / "akshay.csr").is_file()
    subj = h.sh("kubectl get csr agent-smith -o jsonpath='{.spec.request}' | base64 -d | "
                "openssl req -noout -subject").stdout
    assert "O=kubeadm:cluster-admins" in subj.replace(" ", "") and "CN=agent-smith" in subj.replace(" ", "")


def test_reference_solution_passes(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    r = h.grade()
    assert r.passed, r.render()
    assert r.score == r.max_score == 14


def test_api_approval_expiration_and_extra_usages_pass(lab_harness):
    """Approve/deny by writing the approval subresource (as a controller would), with
    expirationSeconds, the full client usage list, and base64 | tr -d '\\n' encoding."""
    h = lab_harness(LAB)
    request = h.sh("base64 < akshay.csr | tr -d '\\n'").stdout
    create_csr(h, request=request, usages="[digital signature, key encipherment, client auth]",
               extra="  expirationSeconds: 3600\n")
    for name, kind in (("akshay", "Approved"), ("agent-smith", "Denied")):
        h.kube.certs.patch_certificate_signing_request_approval(name, {"status": {"conditions": [
            {"type": kind, "status": "True", "reason": "ReviewedByAdmin", "message": "checked by hand"}]}})
    wait_decided(h, "akshay")
    r = h.grade()
    assert r.passed, r.render()


def test_own_fresh_key_and_csr_pass(lab_harness):
    """A learner may make their own key and CSR for the user; the grader follows the work dir's key."""
    h = lab_harness(LAB)
    openssl_new_key_and_csr(h)
    create_csr(h)
    approve_and_deny(h)
    assert h.grade().passed


def test_server_auth_usage_fails(lab_harness):
    h = lab_harness(LAB)
    create_csr(h, usages="[server auth]")
    approve_and_deny(h)
    r = h.grade()
    assert failed_ids(r) == ALL_AFTER_SPEC
    assert check_of(r, "test_csr_spec").message == (
        "CSR 'akshay' asks for usages ['server auth']: 'server auth' is for serving TLS, a user's certificate "
        "needs 'client auth'. A request's spec cannot be changed once it is created: the request has to be made "
        "again. Look: kubectl get csr akshay -o yaml")
    assert check_of(r, "test_approved_issued").message == (
        'Not checked yet: first fix "request uses the client signer and usage \'client auth\'".')


def test_kubelet_signer_fails(lab_harness):
    h = lab_harness(LAB)
    create_csr(h, signer="kubernetes.io/kube-apiserver-client-kubelet")
    approve_and_deny(h)
    r = h.grade()
    assert failed_ids(r) == ALL_AFTER_SPEC
    assert check_of(r, "test_csr_spec").message == (
        "CSR 'akshay' has signerName 'kubernetes.io/kube-apiserver-client-kubelet'; a certificate for a user who "
        "talks to the API server needs 'kubernetes.io/kube-apiserver-client'. A request's spec cannot be "
        "changed once it is created: the request has to be made again. Look: kubectl get csr akshay -o yaml")


def test_request_from_another_key_fails(lab_harness):
    h = lab_harness(LAB)
    openssl_new_key_and_csr(h, key="other.key", csr="other.csr")
    create_csr(h, request=b64_of(h, "other.csr"))
    approve_and_deny(h)
    r = h.grade()
    assert failed_ids(r) == {"test_csr_request", "test_approved_issued", "test_certificate_works"}
    assert check_of(r, "test_csr_request").message == (
        f"The request in CSR 'akshay' was made from a different key than {h.workdir / 'akshay.key'}: the "
        "certificate would be useless with that key. Compare: kubectl get csr akshay -o jsonpath='{.spec.request}' "
        "| base64 -d | openssl req -noout -pubkey and openssl pkey -in akshay.key -pubout")


def test_request_with_wrong_common_name_fails(lab_harness):
    h = lab_harness(LAB)
    h.sh('openssl req -new -key akshay.key -subj "/CN=Akshay Kumar" -out named.csr')
    create_csr(h, request=b64_of(h, "named.csr"))
    approve_and_deny(h)
    r = h.grade()
    assert "test_csr_request" in failed_ids(r)
    assert check_of(r, "test_csr_request").message == (
        "The request in CSR 'akshay' has CN=Akshay Kumar; expected CN=akshay, as in the akshay.csr of the work "
        "directory. Look: kubectl get csr akshay -o jsonpath='{.spec.request}' | base64 -d | "
        "openssl req -noout -subject")


def test_errata_forms_are_rejected_by_the_api_server(lab_harness):
    """Two study-material mistakes never reach the cluster: kube-apiserver refuses them at create
    time. The grader then reports the missing request with advice covering both."""
    h = lab_harness(LAB)
    stripped = h.sh("tr -d '\\n' < akshay.csr | base64 -w0").stdout
    bad = h.kubectl("create", "-f", "-", input=csr_yaml("akshay", stripped), check=False)
    assert bad.returncode != 0 and "PEM block type must be CERTIFICATE REQUEST" in bad.stderr
    no_signer = h.kubectl("create", "-f", "-", input=csr_yaml("akshay", b64_of(h, "akshay.csr"), signer=None),
                          check=False)
    assert no_signer.returncode != 0 and "spec.signerName: Required value" in no_signer.stderr
    # Why the intruder asks for kubeadm:cluster-admins: a system:masters request is refused outright.
    h.sh('openssl req -new -key akshay.key -subj "/CN=akshay/O=system:masters" -out masters.csr')
    masters = h.kubectl("create", "-f", "-", input=csr_yaml("akshay", b64_of(h, "masters.csr")), check=False)
    assert masters.returncode != 0 and "with system:masters group is not allowed" in masters.stderr
    r = h.grade()
    assert check_of(r, "test_csr_exists").message.startswith("CertificateSigningRequest 'akshay' not found")
    assert "v1 requires spec.signerName" in check_of(r, "test_csr_exists").message


def test_pending_request_fails(lab_harness):
    h = lab_harness(LAB)
    create_csr(h)
    h.kubectl("certificate", "deny", "agent-smith")
    r = h.grade()
    assert failed_ids(r) == {"test_approved_issued", "test_certificate_works"}
    assert check_of(r, "test_approved_issued").message == (
        "CSR 'akshay' is still pending: nobody has approved it yet. Look: kubectl get csr akshay (the CONDITION "
        "column)")


def test_approving_the_intruder_fails(lab_harness):
    h = lab_harness(LAB)
    create_csr(h)
    h.kubectl("certificate", "approve", "akshay", "agent-smith")
    wait_decided(h, "akshay")
    r = h.grade()
    assert failed_ids(r) == {"test_intruder_denied", "test_no_other_approved"}
    assert check_of(r, "test_intruder_denied").message == (
        "CSR 'agent-smith' was approved: it asks for group kubeadm:cluster-admins, which is bound to cluster-admin "
        "(kubectl get clusterrolebinding -o wide), so its holder would control the whole cluster. A decision cannot "
        "be undone; 'ckalab reset csr-approval' sets the lab up again with a fresh pending request.")


def test_approving_other_requests_fails_naming_them(lab_harness):
    h = lab_harness(LAB)
    extras = ("stray-request-b", "stray-request-a")
    try:
        h.solve()
        for name in extras:
            h.kubectl("create", "-f", "-", input=csr_yaml(name, b64_of(h, "akshay.csr")))
        h.kubectl("certificate", "approve", *extras)
        r = h.grade()
        assert failed_ids(r) == {"test_no_other_approved"}
        assert check_of(r, "test_no_other_approved").message == (
            "You also approved stray-request-a, stray-request-b: the task asks to approve only 'akshay'. An approved "
            "request hands out a certificate; read each request before approving it. Look: kubectl get csr")
    finally:
        delete_csrs(h, *extras)


def test_missing_or_garbage_key_file_fails(lab_harness):
    h = lab_harness(LAB)
    create_csr(h)
    approve_and_deny(h)
    h.write("akshay.key", b"\x00\xffnot a key\x89PNG")
    r = h.grade()
    assert check_of(r, "test_csr_request").message == (
        f"{h.workdir / 'akshay.key'} is not a readable PEM private key: run 'ckalab start csr-approval' after "
        "removing it.")
    (h.workdir / "akshay.key").unlink()
    r = h.grade()
    assert check_of(r, "test_csr_request").message == (
        f"{h.workdir / 'akshay.key'} is missing: it is the key the request must be made from. Run 'ckalab start "
        "csr-approval' to get a new key and CSR, then create the request again.")


def _snapshot(h):
    csrs = {c["metadata"]["name"]: c["metadata"]["uid"] for c in h.kube.list(CERTS, "CertificateSigningRequest")}
    files = {p.name: p.read_bytes() for p in h.workdir.iterdir() if p.suffix in (".key", ".csr")}
    return csrs, files


def test_start_twice_equals_once(lab_harness):
    h = lab_harness(LAB)
    before = _snapshot(h)
    h.start()
    assert _snapshot(h) == before


def test_reset_removes_only_targets_and_labelled(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    try:
        h.kubectl("create", "-f", "-", input=csr_yaml("bystander", b64_of(h, "akshay.csr")))
        old_intruder = h.kube.get(CERTS, "CertificateSigningRequest", "agent-smith")["metadata"]["uid"]
        key = (h.workdir / "akshay.key").read_bytes()
        removed = h.reset()
        assert sorted(removed) == ["CertificateSigningRequest/agent-smith", "CertificateSigningRequest/akshay"]
        assert h.kube.get(CERTS, "CertificateSigningRequest", "akshay") is None
        assert h.kube.get(CERTS, "CertificateSigningRequest", "bystander") is not None
        intruder = h.kube.get(CERTS, "CertificateSigningRequest", "agent-smith")
        assert intruder["metadata"]["uid"] != old_intruder and not (intruder.get("status") or {}).get("conditions")
        assert (h.workdir / "akshay.key").read_bytes() == key
    finally:
        delete_csrs(h, "bystander")


def test_requests_approved_before_setup_are_not_blamed(lab_harness):
    """An approval from before the lab was set up (an earlier attempt, another lab) is not the learner's
    doing for this task; the same approval made after setup is."""
    h = lab_harness(LAB)
    try:
        h.kubectl("create", "-f", "-", input=csr_yaml("earlier-request", b64_of(h, "akshay.csr")))
        h.kubectl("certificate", "approve", "earlier-request")
        h.reset()  # setup runs again and records what was approved before it
        h.solve()
        assert h.grade().passed
        h.kubectl("create", "-f", "-", input=csr_yaml("later-request", b64_of(h, "akshay.csr")))
        h.kubectl("certificate", "approve", "later-request")
        assert check_of(h.grade(), "test_no_other_approved").message.startswith("You also approved later-request:")
    finally:
        delete_csrs(h, "earlier-request", "later-request")


def test_users_request_that_adds_a_group_fails(lab_harness):
    """The user's own name with O=kubeadm:cluster-admins: an escalation in a familiar request."""
    h = lab_harness(LAB)
    h.sh('openssl req -new -key akshay.key -subj "/CN=akshay/O=kubeadm:cluster-admins" -out grouped.csr')
    create_csr(h, request=b64_of(h, "grouped.csr"))
    h.kubectl("certificate", "deny", "agent-smith")
    r = h.grade()
    assert failed_ids(r) == {"test_csr_request", "test_approved_issued", "test_certificate_works"}
    assert check_of(r, "test_csr_request").message == (
        "The request in CSR 'akshay' also asks for the groups (O) kubeadm:cluster-admins; akshay's request "
        "(akshay.csr) asks for none, and a group in an approved certificate grants whatever is bound to it. "
        "Look: kubectl get csr akshay -o jsonpath='{.spec.request}' | base64 -d | openssl req -noout -subject")
