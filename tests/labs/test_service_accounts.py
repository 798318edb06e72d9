"""service-accounts grader: passes on the reference and other correct forms, fails with pinned messages."""

from ckalab.waiting import wait_for
from conftest import check_of, failed_ids, scored_ids

LAB = "service-accounts"
SA_USER = "system:serviceaccount:default:dashboard-sa"
SA_GROUPS = ["system:serviceaccounts", "system:serviceaccounts:default"]

DEPLOYMENT_YAML = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-dashboard, namespace: default, labels: {app: web-dashboard}}
spec:
  replicas: 2
  selector: {matchLabels: {app: web-dashboard}}
  template:
    metadata: {labels: {app: web-dashboard}}
    spec:
      serviceAccountName: dashboard-sa
      containers:
      - {name: dashboard, image: docker.io/kubernetesui/dashboard:v2.7.0, ports: [{containerPort: 8443}]}
"""


def _rolled_out(h, name="web-dashboard") -> bool:
    d = h.kube.apps.read_namespaced_deployment(name, "default")
    s = d.status
    return (s.observed_generation == d.metadata.generation
            and d.spec.replicas == s.updated_replicas == s.replicas == s.available_replicas)


def _wait_rollout(h, name="web-dashboard") -> None:
    wait_for(lambda: _rolled_out(h, name), 60, f"deployment {name} to roll out")


def _owned(items, uids):
    return [o for o in items if any(r.controller and r.uid in uids for r in o.metadata.owner_references or [])]


def _replicasets(h, name="web-dashboard"):
    """The ReplicaSets of the current Deployment (a reset leaves the old one's to the garbage collector)."""
    d = h.kube.apps.read_namespaced_deployment(name, "default")
    return _owned(h.kube.apps.list_namespaced_replica_set("default").items, {d.metadata.uid})


def _pods(h):
    uids = {rs.metadata.uid for rs in _replicasets(h)}
    pods = _owned(h.kube.core.list_namespaced_pod("default").items, uids)
    return [p for p in pods if not p.metadata.deletion_timestamp]


def _sa_and_rbac(h, subject="--serviceaccount=default:dashboard-sa", verbs="get,watch,list"):
    h.kubectl("create", "serviceaccount", "dashboard-sa", "-n", "default")
    h.kubectl("create", "role", "pod-reader", f"--verb={verbs}", "--resource=pods", "-n", "default")
    h.kubectl("create", "rolebinding", "dashboard-sa-binding", "--role=pod-reader", subject, "-n", "default")


def _use_sa(h):
    h.kubectl("set", "serviceaccount", "deployment", "web-dashboard", "dashboard-sa", "-n", "default")
    _wait_rollout(h)


def test_fresh_start_fails_naming_every_check(lab_harness):
    h = lab_harness(LAB)
    r = h.grade()
    assert not r.passed and r.score == 0
    # Where no container runs (kwok nodes) the dashboard's own API calls are not checked, nor scored.
    assert [c.id for c in r.unavailable()] == ([] if h.cluster.offers("exec") else ["test_dashboard_calls_the_api"])
    assert failed_ids(r) == scored_ids(r)
    assert check_of(r, "test_sa_exists").message == (
        "ServiceAccount 'dashboard-sa' not found in namespace 'default' (kubectl get serviceaccounts -n default).")
    assert check_of(r, "test_binding").message == (
        "RoleBinding 'dashboard-sa-binding' not found in namespace 'default' (kubectl get rolebindings -n default).")
    assert check_of(r, "test_template_uses_sa").message == (
        "Deployment 'web-dashboard' runs its pods as ServiceAccount 'default' (spec.template.spec.serviceAccountName "
        "is not set); expected 'dashboard-sa' (kubectl get deployment web-dashboard -n default -o yaml).")
    assert check_of(r, "test_pods_use_sa").message == 'Not checked yet: first fix "ServiceAccount exists".'


def test_reference_solution_passes(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    r = h.grade()
    assert r.passed, r.render()
    assert r.score == r.max_score == 14


def test_seeded_variant_passes(lab_harness):
    h = lab_harness(LAB, seed="5")
    assert h.params["deployment"] != "web-dashboard"  # the seed really changes the names
    h.solve()
    r = h.grade()
    assert r.passed, r.render()
    h.reset()


def test_imperative_rbac_and_edited_deployment_yaml_pass(lab_harness):
    h = lab_harness(LAB)
    _sa_and_rbac(h)
    h.apply(DEPLOYMENT_YAML)  # the learner rewrote the Deployment's manifest instead of `kubectl set`
    _wait_rollout(h)
    r = h.grade()
    assert r.passed, r.render()


def test_clusterrole_granted_by_rolebinding_passes(lab_harness, cleanup):
    h = lab_harness(LAB)
    cleanup.append(("clusterrole", "pod-reader"))
    h.kubectl("create", "serviceaccount", "dashboard-sa", "-n", "default")
    h.kubectl("create", "clusterrole", "pod-reader", "--verb=get,watch,list", "--resource=pods")
    h.kubectl("create", "rolebinding", "dashboard-sa-binding", "--clusterrole=pod-reader",
              "--serviceaccount=default:dashboard-sa", "-n", "default")
    _use_sa(h)
    r = h.grade()
    assert r.passed, r.render()
    # The grant stays inside the namespace: the grader's probe of kube-system agrees.
    assert not h.kube.can(SA_USER, "list", "pods", "kube-system", groups=SA_GROUPS)


def test_binding_to_user_named_like_the_account_fails(lab_harness):
    h = lab_harness(LAB)
    _sa_and_rbac(h, subject="--user=dashboard-sa")
    _use_sa(h)
    assert not h.kube.can(SA_USER, "list", "pods", "default", groups=SA_GROUPS)
    r = h.grade()
    assert failed_ids(r) == {"test_binding", "test_sa_can", "test_no_overgrant"}
    assert check_of(r, "test_binding").message == (
        "RoleBinding 'dashboard-sa-binding' binds User 'dashboard-sa'. That is a different identity: the service "
        "account authenticates as 'system:serviceaccount:default:dashboard-sa', so a User subject named "
        "'dashboard-sa' grants it nothing: the subject must be the ServiceAccount itself "
        "(kubectl describe rolebinding dashboard-sa-binding -n default).")


def test_account_in_other_namespace_fails(lab_harness):
    h = lab_harness(LAB)
    _sa_and_rbac(h, subject="--serviceaccount=kube-system:dashboard-sa")
    _use_sa(h)
    r = h.grade()
    assert failed_ids(r) == {"test_binding", "test_sa_can", "test_no_overgrant"}
    assert check_of(r, "test_binding").message == (
        "RoleBinding 'dashboard-sa-binding' binds ServiceAccount 'dashboard-sa' in namespace 'kube-system'; "
        "expected the ServiceAccount 'dashboard-sa' in namespace 'default' (kind: ServiceAccount).")


def test_deployment_not_switched_fails(lab_harness):
    h = lab_harness(LAB)
    _sa_and_rbac(h)
    r = h.grade()
    assert failed_ids(r) == {"test_template_uses_sa", "test_pods_use_sa"}
    assert check_of(r, "test_pods_use_sa").message == (
        'Not checked yet: first fix "the Deployment\'s pod template uses the service account".')


def test_paused_rollout_reports_pods_still_rolling_out(lab_harness):
    h = lab_harness(LAB)
    _sa_and_rbac(h)
    h.kubectl("rollout", "pause", "deployment", "web-dashboard", "-n", "default")
    h.kubectl("set", "serviceaccount", "deployment", "web-dashboard", "dashboard-sa", "-n", "default")
    r = h.grade()
    assert failed_ids(r) == {"test_pods_use_sa"}
    assert check_of(r, "test_pods_use_sa").message == (
        "Pods still rolling out: Deployment 'web-dashboard' has no ReplicaSet for its new pod template yet, so its "
        "pods still run as the old service account. The rollout is paused: kubectl rollout resume deployment "
        "web-dashboard -n default")
    h.kubectl("rollout", "resume", "deployment", "web-dashboard", "-n", "default")
    _wait_rollout(h)
    assert h.grade().passed


def test_failing_pod_creation_is_reported(lab_harness, cleanup):
    """A quota that leaves no room for the rollout's surge pod: the new ReplicaSet cannot create
    pods, the old ones keep running as 'default', and the grader passes on the ReplicaSet's reason."""
    h = lab_harness(LAB)
    _sa_and_rbac(h)
    # Other labs' pods may share the namespace in a full test run: leave room for exactly the
    # pods that exist now, so only the rollout's surge pod is refused.
    now = str(sum(1 for p in h.kube.core.list_namespaced_pod("default").items
                  if p.status.phase not in ("Succeeded", "Failed")))
    cleanup.append(("resourcequota", "two-pods", "-n", "default"))
    h.kubectl("create", "quota", "two-pods", f"--hard=pods={now}", "-n", "default")
    wait_for(lambda: (h.kube.core.read_namespaced_resource_quota("two-pods", "default").status.used or {})
             .get("pods") == now, 60, "the quota to count the pods")
    h.kubectl("set", "serviceaccount", "deployment", "web-dashboard", "dashboard-sa", "-n", "default")

    def failing_rs():
        for rs in _replicasets(h):
            for c in rs.status.conditions or []:
                if c.type == "ReplicaFailure" and rs.spec.template.spec.service_account_name == "dashboard-sa":
                    return rs.metadata.name, c.message
    rs, reason = wait_for(failing_rs, 30, "the new ReplicaSet to report ReplicaFailure")
    old = sorted(p.metadata.name for p in _pods(h))
    r = h.grade()
    assert failed_ids(r) == {"test_pods_use_sa"}
    assert check_of(r, "test_pods_use_sa").message == (
        f"Pods still rolling out: Deployment 'web-dashboard' still has pods that run as another service account "
        f"({old[0]} as 'default', {old[1]} as 'default'). ReplicaSet '{rs}' reports: {reason}. It retries after a "
        "back-off; to start over now: kubectl rollout restart deployment web-dashboard -n default")


def test_overgranting_fails(lab_harness):
    h = lab_harness(LAB)
    _sa_and_rbac(h, verbs="get,watch,list,delete")
    _use_sa(h)
    r = h.grade()
    assert failed_ids(r) == {"test_no_overgrant"}
    assert check_of(r, "test_no_overgrant").message == (
        "'system:serviceaccount:default:dashboard-sa' gets more than get, watch and list on pods in 'default':\n"
        "- delete on pods in the core API group in 'default' (from Role 'pod-reader' via RoleBinding "
        "'dashboard-sa-binding' in 'default')\n"
        "Look: kubectl auth can-i --list --as system:serviceaccount:default:dashboard-sa -n default")


def test_missing_verb_fails(lab_harness):
    h = lab_harness(LAB)
    _sa_and_rbac(h, verbs="get,list")
    _use_sa(h)
    r = h.grade()
    assert failed_ids(r) == {"test_role_rules", "test_sa_can"}
    assert check_of(r, "test_role_rules").message == (
        "Role 'pod-reader' does not allow watch on pods (core API group \"\"). Expected verbs: get, watch, list.")
    assert check_of(r, "test_sa_can").message == (
        "SubjectAccessReview: 'system:serviceaccount:default:dashboard-sa' cannot watch pods in namespace 'default'. "
        "Try: kubectl auth can-i watch pods --as system:serviceaccount:default:dashboard-sa -n default")


def _state(h):
    d = h.kube.apps.read_namespaced_deployment("web-dashboard", "default")
    labelled = sorted((o["kind"], o["metadata"]["name"]) for api, kind in
                      (("apps/v1", "Deployment"), ("v1", "ServiceAccount"), ("rbac.authorization.k8s.io/v1", "Role"))
                      for o in h.kube.list(api, kind, "default", label_selector="ckalab.io/lab=" + LAB))
    rss = sorted(rs.metadata.name for rs in _replicasets(h))
    return d.metadata.uid, d.metadata.generation, d.spec.template.spec.service_account_name, labelled, rss


def test_start_twice_equals_once(lab_harness):
    h = lab_harness(LAB)
    _wait_rollout(h)
    once = _state(h)
    h.start()
    assert _state(h) == once
    assert once[2:4] == (None, [("Deployment", "web-dashboard")])


def test_reset_removes_targets_and_keeps_foreign_objects(lab_harness, cleanup):
    h = lab_harness(LAB)
    h.solve()
    cleanup += [("serviceaccount", "foreign-sa", "-n", "default"), ("role", "foreign-role", "-n", "default")]
    h.kubectl("create", "serviceaccount", "foreign-sa", "-n", "default")
    h.kubectl("create", "role", "foreign-role", "--verb=get", "--resource=configmaps", "-n", "default")
    removed = h.reset()
    assert set(removed) == {"ServiceAccount/dashboard-sa", "Role/pod-reader", "RoleBinding/dashboard-sa-binding",
                            "Deployment/web-dashboard"}
    assert h.kube.get("v1", "ServiceAccount", "foreign-sa", "default")
    assert h.kube.get("rbac.authorization.k8s.io/v1", "Role", "foreign-role", "default")
    assert not h.kube.get("v1", "ServiceAccount", "dashboard-sa", "default")
    # setup ran again: the Deployment is back, without the service account
    _wait_rollout(h)
    assert _state(h)[2] is None
