"""new-user grader: the whole chain (key, CSR, approval, kubeconfig, Role, RoleBinding) passes in the
reference and other correct forms; each broken link fails with its pinned learner-facing message.
More wrong answers and alternatives: tests/mutations/new-user.yaml."""

from conftest import check_of, failed_ids

LAB = "new-user"


def test_fresh_start_fails_naming_every_check(lab_harness):
    h = lab_harness(LAB)
    r = h.grade()
    assert not r.passed and r.score == 0
    assert failed_ids(r) == {c.id for c in r.checks}
    assert check_of(r, "test_key").message == (
        f"john.key not found in {h.workdir}: the user's private key goes there. Look: ls {h.workdir}")
    assert check_of(r, "test_csr").message == 'Not checked yet: first fix "the user\'s private key exists".'
    assert check_of(r, "test_kubeconfig").message == (
        f"john.kubeconfig not found in {h.workdir}: the user's kubeconfig goes there, under that name. "
        f"Look: ls {h.workdir}")
    assert check_of(r, "test_role").message == (
        "Role 'app-developer' not found in namespace 'development' (kubectl get roles -n development).")
    assert check_of(r, "test_binding").message == (
        "RoleBinding 'app-developer-binding' not found in namespace 'development' "
        "(kubectl get rolebindings -n development).")
    assert h.kube.get("v1", "Namespace", "development")  # setup: the team's namespace


def test_reference_solution_passes(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    r = h.grade()
    assert r.passed, r.render()
    assert r.score == r.max_score == 20
    # the create was a dry run: nothing of the grader's is left behind
    assert h.kube.get("apps/v1", "Deployment", "ckalab-dry-run", "development") is None


def test_seeded_variant_passes(lab_harness):
    h = lab_harness(LAB, "bob")
    h.solve()
    r = h.grade()
    assert r.passed, r.render()


def test_csr_with_group_fails_at_the_request(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.sh("""kubectl delete csr john
openssl req -new -key john.key -subj "/CN=john/O=developers" -out john.csr
kubectl create -f - <<YAML
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata: {name: john}
spec: {request: $(base64 -w0 < john.csr), signerName: kubernetes.io/kube-apiserver-client, usages: [client auth]}
YAML
kubectl certificate approve john""")
    r = h.grade()
    assert failed_ids(r) == {"test_csr", "test_approved", "test_login", "test_user_can"}
    assert check_of(r, "test_csr").message == (
        "The request in CSR 'john' also asks for the groups (O) developers; the task gives john no group, and a "
        "group grants whatever is bound to it. Look: kubectl get csr john -o jsonpath='{.spec.request}' | base64 -d "
        "| openssl req -noout -subject")


def test_certificate_signed_by_hand_fails_login(lab_harness):
    """A certificate signed directly with the CA key logs in, but it is not the chain the task asks for."""
    h = lab_harness(LAB)
    h.solve()
    pki = h.cluster.pki_dir
    h.sh(f"""openssl x509 -req -in john.csr -CA {pki}/ca.crt -CAkey {pki}/ca.key -CAcreateserial -days 1 -out own.crt 2>/dev/null
kubectl config --kubeconfig=john.kubeconfig set-credentials john --client-certificate=own.crt --client-key=john.key --embed-certs""")
    r = h.grade()
    assert failed_ids(r) == {"test_login", "test_user_can"}
    msg = check_of(r, "test_login").message
    assert msg.startswith("john.kubeconfig logs in with a certificate (serial ")
    assert "that is not the one the cluster issued for CSR 'john'" in msg


def test_deployments_in_core_group_fails(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.apply("""apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: app-developer, namespace: development}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list, watch]}
- {apiGroups: [""], resources: [deployments], verbs: [get, list, create, update, delete]}
""")
    r = h.grade()
    assert failed_ids(r) == {"test_role", "test_user_can"}
    assert check_of(r, "test_role").message == (
        "Role 'app-developer' grants deployments in the core API group \"\", where there are none: deployments "
        "are served by the API group 'apps'. Look: kubectl api-resources | grep deployments")
    assert check_of(r, "test_user_can").message == (
        "As 'john' (with john.kubeconfig), list deployments in 'development' was refused (403): "
        "deployments.apps is forbidden: User \"john\" cannot list resource \"deployments\" in API group \"apps\" "
        "in the namespace \"development\". Look: kubectl auth can-i list deployments --as john -n development")


def test_extra_right_and_other_namespace_fail_nothing_more(lab_harness, cleanup):
    h = lab_harness(LAB)
    h.solve()
    cleanup.append(("rolebinding", "john-view", "-n", "default"))
    h.kubectl("create", "rolebinding", "john-view", "--clusterrole=view", "--user=john", "-n", "default")
    r = h.grade()
    assert failed_ids(r) == {"test_nothing_more"}
    msg = check_of(r, "test_nothing_more").message
    assert msg.startswith("'john' gets more than the task asks for:\n- ")
    assert "(from ClusterRole 'view' via RoleBinding 'john-view' in 'default')" in msg
    assert msg.endswith("Look: kubectl auth can-i --list --as john -n development")


def test_garbage_kubeconfig_is_a_message(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.write("john.kubeconfig", "clusters: [unclosed\n")
    r = h.grade()
    assert failed_ids(r) == {"test_kubeconfig", "test_login", "test_user_can"}
    assert check_of(r, "test_kubeconfig").message == (
        "john.kubeconfig is not valid YAML (line 2, column 1): expected ',' or ']', but got '<stream end>'. "
        "Look: kubectl config view --kubeconfig=john.kubeconfig")
