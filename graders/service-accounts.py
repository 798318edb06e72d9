"""Grader for service-accounts: a ServiceAccount that may only read pods, used by a Deployment.

Decision on the role kind: the task asks for a Role, and a ClusterRole of the same name granted by
the RoleBinding inside the namespace has exactly the same effect, so both pass (the task text
says so). What counts most is the SubjectAccessReview for the account's real identity,
system:serviceaccount:NS:NAME with its groups, and that the Deployment's current pods run as it.
The pod check reads what exists and never waits: during a rollout it says so instead. Where
containers really run, the dashboard's own calls count too: from inside a pod, with its mounted
token, it lists pods and is refused secrets (kubecall, an in-cluster client in ckalab's images).
"""

import json

from ckalab.grading import check, expect, fail, fixture, skip
from ckalab.waiting import WaitTimeout, wait_for
from ckalab.rbac import Allowed, Subject, extra_rights, grants, misnamed_resources, missing_verbs

RBAC = "rbac.authorization.k8s.io/v1"
VERBS = ("get", "watch", "list")
REVISION = "deployment.kubernetes.io/revision"


def _identity(p) -> str:
    return f"system:serviceaccount:{p['namespace']}:{p['sa']}"


def _role(kube, p) -> tuple[str, dict | None]:
    """(kind, object): the Role in the namespace, else a ClusterRole of that name, else (Role, None)."""
    role = kube.get(RBAC, "Role", p["role"], p["namespace"])
    if role:
        return "Role", role
    crole = kube.get(RBAC, "ClusterRole", p["role"])
    return ("ClusterRole", crole) if crole else ("Role", None)


def _sa_of(spec: dict) -> str:
    return spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"


def _deployment(kube, p) -> dict:
    d = kube.get("apps/v1", "Deployment", p["deployment"], p["namespace"])
    expect(d, f"Deployment '{p['deployment']}' not found in namespace '{p['namespace']}'. The lab creates it: "
           f"restore it with ckalab reset service-accounts (kubectl get deployments -n {p['namespace']}).")
    return d


@check(2, "ServiceAccount exists", hint="kubectl get serviceaccounts -n NAMESPACE")
def test_sa_exists(kube, lab):
    p = lab.params
    expect(kube.get("v1", "ServiceAccount", p["sa"], p["namespace"]),
           f"ServiceAccount '{p['sa']}' not found in namespace '{p['namespace']}' "
           f"(kubectl get serviceaccounts -n {p['namespace']}).")


@check(1, "Role exists", hint="kubectl get role -n NAMESPACE")
def test_role_exists(kube, lab):
    p = lab.params
    expect(_role(kube, p)[1], f"Role '{p['role']}' not found in namespace '{p['namespace']}' "
           f"(kubectl get roles -n {p['namespace']}).")


@check(2, "Role allows get, watch and list on pods", after="test_role_exists",
       hint="kubectl describe role NAME -n NAMESPACE shows its rules")
def test_role_rules(kube, lab):
    p = lab.params
    kind, role = _role(kube, p)
    rules = role.get("rules") or []
    odd = misnamed_resources(rules, ("pod", "po"))
    if odd:
        fail(f"{kind} '{p['role']}' names resources {odd}: resources are lowercase plurals, use 'pods'.")

    missing = missing_verbs(rules, "pods", VERBS)
    expect(not missing, f"{kind} '{p['role']}' does not allow {', '.join(missing)} on pods (core API group \"\"). "
           f"Expected verbs: {', '.join(VERBS)}.")


@check(2, "RoleBinding grants the Role to the service account", hint="kubectl describe rolebinding NAME -n NAMESPACE")
def test_binding(kube, lab):
    p = lab.params
    ns, sa, b = p["namespace"], p["sa"], p["binding"]
    rb = kube.get(RBAC, "RoleBinding", b, ns)
    expect(rb, f"RoleBinding '{b}' not found in namespace '{ns}' (kubectl get rolebindings -n {ns}).")
    kind = _role(kube, p)[0]
    ref = rb["roleRef"]
    expect(ref["kind"] == kind and ref["name"] == p["role"],
           f"RoleBinding '{b}' refers to {ref['kind']} '{ref['name']}'; expected {kind} '{p['role']}'.")
    subjects = rb.get("subjects") or []
    # In a RoleBinding a ServiceAccount subject without a namespace means the binding's namespace;
    # a User subject spelled with the full service-account user name is the same identity too.
    if any((s.get("kind") == "ServiceAccount" and s.get("name") == sa and (s.get("namespace") or ns) == ns)
           or (s.get("kind") == "User" and s.get("name") == _identity(p)) for s in subjects):
        return
    if any(s.get("kind") == "User" and s.get("name") == sa for s in subjects):
        fail(f"RoleBinding '{b}' binds User '{sa}'. That is a different identity: the service account "
             f"authenticates as '{_identity(p)}', so a User subject named '{sa}' grants it nothing: the "
             f"subject must be the ServiceAccount itself (kubectl describe rolebinding {b} -n {ns}).")
    found = ", ".join(f"{s.get('kind')} '{s.get('name')}'"
                      + (f" in namespace '{s['namespace']}'" if s.get("namespace") else "")
                      for s in subjects) or "no subjects"
    fail(f"RoleBinding '{b}' binds {found}; expected the ServiceAccount '{sa}' in namespace '{ns}' "
         "(kind: ServiceAccount).")


def _can(kube, p, verb, resource, ns, group=""):
    groups = list(Subject.service_account(p["namespace"], p["sa"]).groups)
    return kube.can(_identity(p), verb, resource, ns, group=group, groups=groups)


@check(2, "the service account can get, watch and list pods", after=("test_role_exists", "test_binding"),
       hint="kubectl auth can-i list pods --as system:serviceaccount:NAMESPACE:NAME -n NAMESPACE")
def test_sa_can(kube, lab):
    p = lab.params
    denied = [v for v in VERBS if not _can(kube, p, v, "pods", p["namespace"])]
    expect(not denied, f"SubjectAccessReview: '{_identity(p)}' cannot {', '.join(denied)} pods in namespace "
           f"'{p['namespace']}'. Try: kubectl auth can-i {denied[0] if denied else 'list'} pods --as {_identity(p)} "
           f"-n {p['namespace']}")


@check(1, "the service account gets nothing more", after="test_binding",
       hint="kubectl auth can-i --list --as system:serviceaccount:NAMESPACE:NAME -n NAMESPACE")
def test_no_overgrant(kube, lab):
    """Judged from every rule that bindings of the account, or of its groups, grant."""
    p = lab.params
    ns = p["namespace"]
    extra = extra_rights(grants(kube, Subject.service_account(ns, p["sa"])), [Allowed("pods", VERBS, namespace=ns)], kube)
    expect(not extra, f"'{_identity(p)}' gets more than get, watch and list on pods in '{ns}':\n"
           + "\n".join(f"- {e}" for e in extra) + f"\nLook: kubectl auth can-i --list --as {_identity(p)} -n {ns}")


@check(2, "the Deployment's pod template uses the service account",
       hint="kubectl get deployment NAME -n NAMESPACE -o jsonpath='{.spec.template.spec.serviceAccountName}'")
def test_template_uses_sa(kube, lab):
    p = lab.params
    spec = _deployment(kube, p)["spec"]["template"]["spec"]
    used = _sa_of(spec)
    unset = "" if spec.get("serviceAccountName") or spec.get("serviceAccount") else \
        " (spec.template.spec.serviceAccountName is not set)"
    expect(used == p["sa"], f"Deployment '{p['deployment']}' runs its pods as ServiceAccount '{used}'{unset}; "
           f"expected '{p['sa']}' (kubectl get deployment {p['deployment']} -n {p['namespace']} -o yaml).")


def _owned_by(objs: list[dict], uids: set[str]) -> list[dict]:
    return [o for o in objs if any(r.get("controller") and r.get("uid") in uids
                                   for r in o["metadata"].get("ownerReferences") or [])]


@check(2, "the Deployment's pods run as the service account", after=("test_sa_exists", "test_template_uses_sa"),
       hint="kubectl get pods -n NAMESPACE -o custom-columns=NAME:.metadata.name,SA:.spec.serviceAccountName")
def test_pods_use_sa(kube, lab):
    p = lab.params
    ns, name, sa = p["namespace"], p["deployment"], p["sa"]
    dep = _deployment(kube, p)
    watch = (f" The rollout is paused: kubectl rollout resume deployment {name} -n {ns}" if dep["spec"].get("paused")
             else f" Watch it: kubectl rollout status deployment {name} -n {ns}")
    rss = _owned_by(kube.list("apps/v1", "ReplicaSet", ns), {dep["metadata"]["uid"]})
    newest = max(rss, key=lambda r: int((r["metadata"].get("annotations") or {}).get(REVISION, 0)), default=None)
    if newest is None or _sa_of(newest["spec"]["template"]["spec"]) != sa:
        fail(f"Pods still rolling out: Deployment '{name}' has no ReplicaSet for its new pod template yet, so its "
             f"pods still run as the old service account.{watch}")
    pods = [x for x in _owned_by(kube.list("v1", "Pod", ns), {r["metadata"]["uid"] for r in rss})
            if not x["metadata"].get("deletionTimestamp")]
    # Pod creation fails while the ServiceAccount is missing; the ReplicaSet says so, and its
    # controller then retries only after a growing back-off.
    why = [c.get("message") for c in (newest.get("status") or {}).get("conditions") or []
           if c.get("type") == "ReplicaFailure"]
    if why:
        watch = (f" ReplicaSet '{newest['metadata']['name']}' reports: {why[0]}. It retries after a back-off; "
                 f"to start over now: kubectl rollout restart deployment {name} -n {ns}")
    old = sorted(f"{x['metadata']['name']} as '{_sa_of(x['spec'])}'" for x in pods if _sa_of(x["spec"]) != sa)
    if old:
        fail(f"Pods still rolling out: Deployment '{name}' still has pods that run as another service account "
             f"({', '.join(old)}).{watch}")
    if not pods:
        fail(f"Pods still rolling out: no pod of Deployment '{name}' runs as '{sa}' yet.{watch}")
    tokenless = sorted(x["metadata"]["name"] for x in pods
                       if not any(s.get("serviceAccountToken") for v in x["spec"].get("volumes") or []
                                  for s in (v.get("projected") or {}).get("sources") or []))
    expect(not tokenless, f"Pods {', '.join(tokenless)} run as '{sa}' but mount no token for it "
           "(automountServiceAccountToken: false on the pod template or the ServiceAccount), so the dashboard "
           f"cannot use the account. Look: kubectl get pod {tokenless[0] if tokenless else ''} -n {ns} -o yaml")


# --- the dashboard's own calls (clusters whose containers run) ---------------------------------

@fixture
def exec_in_dashboard(cluster, kube, lab):
    """Runs kubecall PATH in a running dashboard pod; skips (not scored) where nothing runs."""
    if not cluster.offers("exec"):
        skip(f"the {cluster.backend} backend has no running containers to call the API from")
    p = lab.params
    got: dict = {}

    def settled():  # a pod as the account runs, or none is even starting
        mine = [x for x in kube.list("v1", "Pod", p["namespace"], f"app={p['deployment']}")
                if not x["metadata"].get("deletionTimestamp") and _sa_of(x["spec"]) == p["sa"]]
        got["pods"] = [x for x in mine if (x.get("status") or {}).get("phase") == "Running"]
        return bool(got["pods"]) or not mine
    try:  # pods the rollout has just created are still starting
        wait_for(settled, 30, "a dashboard pod to run")
    except WaitTimeout:
        pass
    if not got["pods"]:
        fail(f"Not checked yet: no pod of Deployment '{p['deployment']}' runs as '{p['sa']}' yet "
             f"(kubectl get pods -n {p['namespace']} -l app={p['deployment']}).")
    pod = sorted(got["pods"], key=lambda x: x["metadata"]["name"])[0]

    def call(path: str) -> tuple[str, str, str]:
        out = kube.exec(pod["metadata"]["name"], p["namespace"], pod["spec"]["containers"][0]["name"],
                        ["kubecall", path], timeout=10)
        if "executable file not found" in out or "kubecall: not found" in out:
            skip("the dashboard's image has no kubecall (ckalab's busybox has it; upstream busybox does not)")
        status, _, body = out.partition("\n")
        return pod["metadata"]["name"], status.strip(), body
    return call


def _reason(body: str) -> str:
    """The API server's own words from a Status body."""
    try:
        return json.loads(body).get("message") or body[:200]
    except ValueError:
        return body.strip()[:200]


@check(2, "the dashboard really lists pods with its mounted token, and may not read secrets",
       hint="kubectl exec POD -- kubecall /api/v1/namespaces/NAMESPACE/pods; kubectl logs POD")
def test_dashboard_calls_the_api(lab, exec_in_dashboard):
    p = lab.params
    ns, who = p["namespace"], _identity(p)
    pod, status, body = exec_in_dashboard(f"/api/v1/namespaces/{ns}/pods")
    expect(status == "200", f"Pod '{pod}' asked the API server for the pods in '{ns}' with its mounted token and "
           f"got {status}: {_reason(body)}. Look: kubectl auth can-i list pods --as {who} -n {ns}")
    pod, status, body = exec_in_dashboard(f"/api/v1/namespaces/{ns}/secrets")
    expect(status == "403", f"Pod '{pod}' could read the secrets in '{ns}' with its token (HTTP {status}): the "
           f"account may do more than read pods. Look: kubectl auth can-i --list --as {who} -n {ns}")
