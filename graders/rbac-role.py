"""Grader for rbac-role: a Role with pod rights bound to one user, nothing more."""

from ckalab.grading import check, expect, fail
from ckalab.rbac import Allowed, Subject, extra_rights, grants, misnamed_resources, missing_verbs

RBAC = "rbac.authorization.k8s.io/v1"
VERBS = ("create", "list", "delete")


def _role(kube, lab):
    p = lab.params
    return kube.get(RBAC, "Role", p["role"], p["namespace"])


@check(2, "Role exists", hint="kubectl get role -n NAMESPACE")
def test_role_exists(kube, lab):
    p = lab.params
    expect(_role(kube, lab), f"Role '{p['role']}' not found in namespace '{p['namespace']}' "
           f"(kubectl get roles -n {p['namespace']}).")


@check(3, "Role allows create, list and delete on pods", after="test_role_exists",
       hint="kubectl describe role NAME -n NAMESPACE shows its rules")
def test_role_rules(kube, lab):
    p = lab.params
    rules = _role(kube, lab).get("rules") or []
    odd = misnamed_resources(rules, ("pod", "po"))
    if odd:
        fail(f"Role '{p['role']}' names resources {odd}: resources are lowercase plurals, use 'pods'.")

    missing = missing_verbs(rules, "pods", VERBS)
    expect(not missing, f"Role '{p['role']}' does not allow {', '.join(missing)} on pods (core API group \"\"). "
           f"Expected verbs: {', '.join(VERBS)}.")


@check(2, "RoleBinding grants the Role to the user", hint="kubectl describe rolebinding NAME -n NAMESPACE")
def test_binding(kube, lab):
    p = lab.params
    rb = kube.get(RBAC, "RoleBinding", p["binding"], p["namespace"])
    expect(rb, f"RoleBinding '{p['binding']}' not found in namespace '{p['namespace']}' "
           f"(kubectl get rolebindings -n {p['namespace']}).")
    ref = rb["roleRef"]
    expect(ref["kind"] == "Role" and ref["name"] == p["role"],
           f"RoleBinding '{p['binding']}' refers to {ref['kind']} '{ref['name']}'; expected Role '{p['role']}'.")
    subjects = rb.get("subjects") or []
    users = [s for s in subjects if s.get("kind") == "User" and s.get("name") == p["user"]]
    if not users:
        found = ", ".join(f"{s.get('kind')} '{s.get('name')}'" for s in subjects) or "no subjects"
        fail(f"RoleBinding '{p['binding']}' binds {found}; expected the User '{p['user']}' "
             "(kind: User, not Group or ServiceAccount).")


@check(2, "the user can create, list and delete pods", after="test_binding",
       hint="kubectl auth can-i delete pods --as USER -n NAMESPACE")
def test_user_can(kube, lab):
    p = lab.params
    denied = [v for v in VERBS if not kube.can(p["user"], v, "pods", p["namespace"])]
    expect(not denied, f"SubjectAccessReview: '{p['user']}' cannot {', '.join(denied)} pods in "
           f"namespace '{p['namespace']}'.")


@check(1, "the user gets nothing more", after="test_binding",
       hint="kubectl auth can-i --list --as USER -n NAMESPACE")
def test_no_overgrant(kube, lab):
    """Judged from every rule the user's bindings grant, not from a sample of permissions."""
    p = lab.params
    allowed = [Allowed("pods", VERBS, namespace=p["namespace"])]
    extra = extra_rights(grants(kube, Subject(p["user"])), allowed, kube)
    expect(not extra, f"'{p['user']}' gets more than create, list and delete on pods in '{p['namespace']}':\n"
           + "\n".join(f"- {e}" for e in extra)
           + f"\nLook: kubectl auth can-i --list --as {p['user']} -n {p['namespace']}")
