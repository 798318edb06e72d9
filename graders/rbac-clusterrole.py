"""Grader for rbac-clusterrole: two ClusterRoles (nodes; persistentvolumes + storageclasses)
granted cluster-wide to one user, and nothing more.

Shape checks name the usual mistakes precisely (a namespaced Role or RoleBinding for
cluster-scoped resources, `Node` instead of `nodes`, storageclasses under the core group, a
Group subject); the SubjectAccessReview checks then judge the effect, so any correct form
(one rule or several, kubectl or YAML) passes.
"""

import json

from ckalab.grading import check, expect, fail
from ckalab.rbac import Allowed, Subject, extra_rights, grants, missing_verbs, rule_covers

RBAC = "rbac.authorization.k8s.io/v1"
VERBS = ("get", "watch", "list", "create", "delete")
NODES = {"nodes": ""}  # resource -> API group it lives in
STORAGE = {"persistentvolumes": "", "storageclasses": "storage.k8s.io"}
# Spellings learners use that RBAC does not understand, mapped to the name it matches on.
ALIASES = {"node": "nodes", "no": "nodes", "persistentvolume": "persistentvolumes", "pv": "persistentvolumes",
           "storageclass": "storageclasses", "sc": "storageclasses"}


def _group(g: str) -> str:
    return 'the core API group ""' if g == "" else f"the API group {g}"


def _find_elsewhere(kube, kind: str, name: str) -> list[str]:
    """Namespaces holding a namespaced Role/RoleBinding called `name` (the classic mix-up)."""
    return sorted(o["metadata"]["namespace"] for o in kube.list(RBAC, kind) if o["metadata"]["name"] == name)


def _role_exists(kube, role: str, what: str) -> None:
    if kube.get(RBAC, "ClusterRole", role):
        return
    where = _find_elsewhere(kube, "Role", role)
    if where:
        fail(f"ClusterRole '{role}' not found, but there is a Role '{role}' in namespace '{where[0]}'. A Role is "
             f"namespaced and cannot grant {what}, which are cluster-scoped: the task needs a ClusterRole "
             f"(kubectl get role {role} -n {where[0]} -o yaml; kubectl api-resources --namespaced=false).")
    fail(f"ClusterRole '{role}' not found (kubectl get clusterroles).")


def _check_rules(kube, role: str, wanted: dict[str, str]) -> None:
    rules = kube.get(RBAC, "ClusterRole", role).get("rules") or []
    odd = sorted({x for r in rules for x in r.get("resources") or []
                  if x not in wanted and (x.lower() in wanted or x.lower() in ALIASES)})
    if odd:
        use = sorted({ALIASES.get(x.lower(), x.lower()) for x in odd})
        fail(f"ClusterRole '{role}' names resources {odd}: resources are lowercase plurals, use "
             f"{' and '.join(repr(u) for u in use)}.")

    for res, group in wanted.items():
        if not any(rule_covers(r, res, group) for r in rules):
            groups = sorted({g for r in rules if res in (r.get("resources") or []) for g in r.get("apiGroups") or []})
            if groups:
                fail(f"ClusterRole '{role}' lists {res} under apiGroups {json.dumps(groups)}, but {res} belong to "
                     f"{_group(group)}: use apiGroups: [\"{group}\"] for them (kubectl api-resources shows the group).")
    missing = []
    for res, group in wanted.items():
        verbs = missing_verbs(rules, res, VERBS, group)
        if verbs:
            missing.append(f"{', '.join(verbs)} on {res} ({_group(group)})")
    expect(not missing, f"ClusterRole '{role}' does not allow {'; '.join(missing)}. Expected verbs: "
           f"{', '.join(VERBS)}. Look: kubectl describe clusterrole {role}")


def _check_binding(kube, p, binding: str, role: str, what: str) -> None:
    user = p["user"]
    crb = kube.get(RBAC, "ClusterRoleBinding", binding)
    if not crb:
        where = _find_elsewhere(kube, "RoleBinding", binding)
        if where:
            fail(f"'{binding}' is a RoleBinding in namespace '{where[0]}', not a ClusterRoleBinding. A RoleBinding "
                 f"grants only inside its namespace and {what} are cluster-scoped, so it gives '{user}' nothing on "
                 f"them (kubectl get rolebinding {binding} -n {where[0]} -o yaml).")
        fail(f"ClusterRoleBinding '{binding}' not found (kubectl get clusterrolebindings).")
    ref = crb["roleRef"]
    expect(ref["kind"] == "ClusterRole" and ref["name"] == role,
           f"ClusterRoleBinding '{binding}' refers to {ref['kind']} '{ref['name']}'; expected ClusterRole '{role}'.")
    subjects = crb.get("subjects") or []
    if not any(s.get("kind") == "User" and s.get("name") == user for s in subjects):
        found = ", ".join(f"{s.get('kind')} '{s.get('name')}'" for s in subjects) or "no subjects"
        fail(f"ClusterRoleBinding '{binding}' binds {found}; expected the User '{user}' "
             "(kind: User, not Group or ServiceAccount).")


@check(1, "ClusterRole for nodes exists", hint="kubectl get clusterrole NAME")
def test_node_role_exists(kube, lab):
    _role_exists(kube, lab.params["node_role"], "nodes")


@check(2, "node ClusterRole allows get, watch, list, create and delete on nodes", after="test_node_role_exists",
       hint="kubectl describe clusterrole NAME shows its rules")
def test_node_role_rules(kube, lab):
    _check_rules(kube, lab.params["node_role"], NODES)


@check(2, "ClusterRoleBinding grants the node ClusterRole to the user",
       hint="kubectl describe clusterrolebinding NAME")
def test_node_binding(kube, lab):
    p = lab.params
    _check_binding(kube, p, p["node_binding"], p["node_role"], "nodes")


@check(1, "ClusterRole for storage exists", hint="kubectl get clusterrole NAME")
def test_storage_role_exists(kube, lab):
    _role_exists(kube, lab.params["storage_role"], "persistentvolumes and storageclasses")


@check(2, "storage ClusterRole allows the five verbs on persistentvolumes and storageclasses",
       after="test_storage_role_exists",
       hint="kubectl describe clusterrole NAME; kubectl api-resources | grep -i storage")
def test_storage_role_rules(kube, lab):
    _check_rules(kube, lab.params["storage_role"], STORAGE)


@check(2, "ClusterRoleBinding grants the storage ClusterRole to the user",
       hint="kubectl describe clusterrolebinding NAME")
def test_storage_binding(kube, lab):
    p = lab.params
    _check_binding(kube, p, p["storage_binding"], p["storage_role"], "persistentvolumes and storageclasses")


def _denied(kube, user: str, wanted: dict[str, str]) -> list[str]:
    out = []
    for res, group in wanted.items():
        verbs = [v for v in VERBS if not kube.can(user, v, res, group=group)]
        if verbs:
            out.append(f"{', '.join(verbs)} {res}")
    return out


@check(2, "the user can get, watch, list, create and delete nodes",
       after=("test_node_role_exists", "test_node_binding"), hint="kubectl auth can-i delete nodes --as USER")
def test_user_nodes(kube, lab):
    user = lab.params["user"]
    denied = _denied(kube, user, NODES)
    expect(not denied, f"SubjectAccessReview: '{user}' cannot {'; '.join(denied)} (cluster scope). "
           f"Try: kubectl auth can-i {VERBS[-1]} nodes --as {user}")


@check(2, "the user can manage persistentvolumes and storageclasses",
       after=("test_storage_role_exists", "test_storage_binding"),
       hint="kubectl auth can-i delete storageclasses --as USER")
def test_user_storage(kube, lab):
    user = lab.params["user"]
    denied = _denied(kube, user, STORAGE)
    expect(not denied, f"SubjectAccessReview: '{user}' cannot {'; '.join(denied)} (cluster scope). "
           f"Try: kubectl auth can-i --list --as {user}")


@check(2, "the user gets nothing more", after=("test_node_binding", "test_storage_binding"),
       hint="kubectl auth can-i --list --as USER")
def test_no_overgrant(kube, lab):
    """Judged from every rule the user's bindings grant: `patch nodes` or `nodes/proxy` (the
    kubelet's API, which runs commands in any pod) are as extra as `list secrets`."""
    user = lab.params["user"]
    allowed = [Allowed(res, VERBS, group) for res, group in {**NODES, **STORAGE}.items()]
    extra = extra_rights(grants(kube, Subject(user)), allowed, kube)
    expect(not extra, f"'{user}' gets more than get, watch, list, create and delete on nodes, persistentvolumes "
           "and storageclasses:\n" + "\n".join(f"- {e}" for e in extra)
           + f"\nLook: kubectl auth can-i --list --as {user}")
