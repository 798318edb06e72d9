"""rbac-clusterrole grader: passes on the reference and other correct forms, fails with pinned messages."""

import pytest

from conftest import check_of, failed_ids

LAB = "rbac-clusterrole"
RBAC = "rbac.authorization.k8s.io/v1"
TARGETS = [("ClusterRole", "node-admin"), ("ClusterRoleBinding", "michelle-binding"),
           ("ClusterRole", "storage-admin"), ("ClusterRoleBinding", "michelle-storage-admin")]

STORAGE_OK = """
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: storage-admin}
rules:
- {apiGroups: [""], resources: [persistentvolumes], verbs: [get, watch, list, create, delete]}
- {apiGroups: [storage.k8s.io], resources: [storageclasses], verbs: [get, watch, list, create, delete]}
"""


def _bind(h, name, role, subject="--user=michelle"):
    h.kubectl("create", "clusterrolebinding", name, f"--clusterrole={role}", subject)


def _kubectl_nodes(h):
    h.kubectl("create", "clusterrole", "node-admin", "--verb=get,watch,list,create,delete", "--resource=nodes")
    _bind(h, "michelle-binding", "node-admin")


def _kubectl_storage(h):
    h.kubectl("create", "clusterrole", "storage-admin", "--verb=get,watch,list,create,delete",
              "--resource=persistentvolumes,storageclasses")
    _bind(h, "michelle-storage-admin", "storage-admin")


def test_fresh_start_fails_naming_every_check(lab_harness):
    h = lab_harness(LAB)
    r = h.grade()
    assert not r.passed and r.score == 0
    assert failed_ids(r) == {c.id for c in r.checks}
    assert check_of(r, "test_node_role_exists").message == (
        "ClusterRole 'node-admin' not found (kubectl get clusterroles).")
    assert check_of(r, "test_storage_binding").message == (
        "ClusterRoleBinding 'michelle-storage-admin' not found (kubectl get clusterrolebindings).")
    assert check_of(r, "test_node_role_rules").message == 'Not checked yet: first fix "ClusterRole for nodes exists".'
    assert check_of(r, "test_no_overgrant").message == (
        'Not checked yet: first fix "ClusterRoleBinding grants the node ClusterRole to the user".')


def test_reference_solution_passes(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    r = h.grade()
    assert r.passed, r.render()
    assert r.score == r.max_score == 16


def test_seeded_variant_passes(lab_harness):
    h = lab_harness(LAB, seed="3")
    h.solve()
    r = h.grade()
    assert r.passed, r.render()
    h.reset()  # the variant's names are targets too: leave nothing behind


def test_imperative_kubectl_passes(lab_harness):
    h = lab_harness(LAB)
    _kubectl_nodes(h)
    _kubectl_storage(h)
    assert h.grade().passed


def test_one_rule_for_storage_and_verbs_split_for_nodes_pass(lab_harness):
    h = lab_harness(LAB)
    h.apply("""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: node-admin}
rules:
- {apiGroups: [""], resources: [nodes], verbs: [get, watch, list]}
- {apiGroups: [""], resources: [nodes], verbs: [create]}
- {apiGroups: [""], resources: [nodes], verbs: [delete]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: storage-admin}
rules:
- apiGroups: ["", storage.k8s.io]
  resources: [persistentvolumes, storageclasses]
  verbs: [get, watch, list, create, delete]
""")
    _bind(h, "michelle-binding", "node-admin")
    _bind(h, "michelle-storage-admin", "storage-admin")
    r = h.grade()
    assert r.passed, r.render()


def test_rolebinding_instead_of_clusterrolebinding_fails(lab_harness, cleanup):
    h = lab_harness(LAB)
    h.kubectl("create", "clusterrole", "node-admin", "--verb=get,watch,list,create,delete", "--resource=nodes")
    cleanup.append(("rolebinding", "michelle-binding", "-n", "default"))
    h.kubectl("create", "rolebinding", "michelle-binding", "--clusterrole=node-admin", "--user=michelle",
              "-n", "default")
    _kubectl_storage(h)
    # The RoleBinding really grants nothing on nodes: the API server agrees with the message.
    assert not h.kube.can("michelle", "list", "nodes")
    r = h.grade()
    assert failed_ids(r) == {"test_node_binding", "test_user_nodes", "test_no_overgrant"}
    assert check_of(r, "test_node_binding").message == (
        "'michelle-binding' is a RoleBinding in namespace 'default', not a ClusterRoleBinding. A RoleBinding grants "
        "only inside its namespace and nodes are cluster-scoped, so it gives 'michelle' nothing on them "
        "(kubectl get rolebinding michelle-binding -n default -o yaml).")


def test_namespaced_role_instead_of_clusterrole_fails(lab_harness, cleanup):
    h = lab_harness(LAB)
    cleanup.append(("role", "node-admin", "-n", "default"))
    h.apply("""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: node-admin, namespace: default}
rules:
- {apiGroups: [""], resources: [nodes], verbs: [get, watch, list, create, delete]}
""")
    _bind(h, "michelle-binding", "node-admin")
    _kubectl_storage(h)
    r = h.grade()
    assert failed_ids(r) == {"test_node_role_exists", "test_node_role_rules", "test_user_nodes"}
    assert check_of(r, "test_node_role_exists").message == (
        "ClusterRole 'node-admin' not found, but there is a Role 'node-admin' in namespace 'default'. A Role is "
        "namespaced and cannot grant nodes, which are cluster-scoped: the task needs a ClusterRole "
        "(kubectl get role node-admin -n default -o yaml; kubectl api-resources --namespaced=false).")


@pytest.mark.parametrize("resource", ["Node", "node"])
def test_resource_not_lowercase_plural_fails(lab_harness, resource):
    h = lab_harness(LAB)
    h.apply(f"""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {{name: node-admin}}
rules:
- {{apiGroups: [""], resources: [{resource}], verbs: [get, watch, list, create, delete]}}
""")
    _bind(h, "michelle-binding", "node-admin")
    _kubectl_storage(h)
    r = h.grade()
    assert failed_ids(r) == {"test_node_role_rules", "test_user_nodes"}
    assert check_of(r, "test_node_role_rules").message == (
        f"ClusterRole 'node-admin' names resources ['{resource}']: resources are lowercase plurals, use 'nodes'.")
    assert check_of(r, "test_user_nodes").message == (
        "SubjectAccessReview: 'michelle' cannot get, watch, list, create, delete nodes (cluster scope). "
        "Try: kubectl auth can-i delete nodes --as michelle")


def test_storageclasses_in_core_group_fails(lab_harness):
    h = lab_harness(LAB)
    _kubectl_nodes(h)
    h.apply("""
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: storage-admin}
rules:
- {apiGroups: [""], resources: [persistentvolumes, storageclasses], verbs: [get, watch, list, create, delete]}
""")
    _bind(h, "michelle-storage-admin", "storage-admin")
    r = h.grade()
    assert failed_ids(r) == {"test_storage_role_rules", "test_user_storage"}
    assert check_of(r, "test_storage_role_rules").message == (
        "ClusterRole 'storage-admin' lists storageclasses under apiGroups [\"\"], but storageclasses belong to the "
        "API group storage.k8s.io: use apiGroups: [\"storage.k8s.io\"] for them "
        "(kubectl api-resources shows the group).")
    assert check_of(r, "test_user_storage").message == (
        "SubjectAccessReview: 'michelle' cannot get, watch, list, create, delete storageclasses (cluster scope). "
        "Try: kubectl auth can-i --list --as michelle")


def test_missing_verb_fails(lab_harness):
    h = lab_harness(LAB)
    _kubectl_nodes(h)
    h.apply(STORAGE_OK.replace("verbs: [get, watch, list, create, delete]}\n- ", "verbs: [get, list]}\n- "))
    _bind(h, "michelle-storage-admin", "storage-admin")
    r = h.grade()
    assert failed_ids(r) == {"test_storage_role_rules", "test_user_storage"}
    assert check_of(r, "test_storage_role_rules").message == (
        "ClusterRole 'storage-admin' does not allow watch, create, delete on persistentvolumes "
        "(the core API group \"\"). "
        "Expected verbs: get, watch, list, create, delete. Look: kubectl describe clusterrole storage-admin")


def test_binding_to_group_fails(lab_harness):
    h = lab_harness(LAB)
    h.kubectl("create", "clusterrole", "node-admin", "--verb=get,watch,list,create,delete", "--resource=nodes")
    _bind(h, "michelle-binding", "node-admin", "--group=michelle")
    _kubectl_storage(h)
    r = h.grade()
    assert failed_ids(r) == {"test_node_binding", "test_user_nodes", "test_no_overgrant"}
    assert check_of(r, "test_node_binding").message == (
        "ClusterRoleBinding 'michelle-binding' binds Group 'michelle'; expected the User 'michelle' "
        "(kind: User, not Group or ServiceAccount).")


def test_overgranting_fails(lab_harness):
    h = lab_harness(LAB)
    h.kubectl("create", "clusterrole", "node-admin", "--verb=*", "--resource=nodes,persistentvolumeclaims")
    _bind(h, "michelle-binding", "node-admin")
    _kubectl_storage(h)
    r = h.grade()
    assert failed_ids(r) == {"test_no_overgrant"}
    assert check_of(r, "test_no_overgrant").message == (
        "'michelle' gets more than get, watch, list, create and delete on nodes, persistentvolumes and "
        "storageclasses:\n"
        "- every verb (*) on nodes in the core API group in every namespace and cluster-wide (from ClusterRole "
        "'node-admin' via ClusterRoleBinding 'michelle-binding')\n"
        "- every verb (*) on persistentvolumeclaims in the core API group in every namespace and cluster-wide (from "
        "ClusterRole 'node-admin' via ClusterRoleBinding 'michelle-binding')\n"
        "Look: kubectl auth can-i --list --as michelle")


def _lab_state(h):
    labelled = {(k, o["metadata"]["name"]) for k in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
                for o in h.kube.list(RBAC, k, label_selector="ckalab.io/lab=" + LAB)}
    present = {(k, n) for k, n in TARGETS if h.kube.get(RBAC, k, n)}
    return labelled, present


def test_start_twice_equals_once(lab_harness):
    h = lab_harness(LAB)
    once = _lab_state(h), [(c.id, c.passed, c.message) for c in h.grade().checks]
    h.start()
    twice = _lab_state(h), [(c.id, c.passed, c.message) for c in h.grade().checks]
    assert once == twice
    assert once[0] == (set(), set())  # nothing to set up: the task starts from a clean cluster


def test_reset_removes_targets_and_keeps_foreign_objects(lab_harness, cleanup):
    h = lab_harness(LAB)
    _kubectl_nodes(h)  # the learner's own, unlabelled: removed because they are targets
    h.solve()
    cleanup.append(("clusterrole", "foreign-viewer"))
    h.kubectl("create", "clusterrole", "foreign-viewer", "--verb=get", "--resource=nodes")
    removed = h.reset()
    assert set(removed) == {f"{k}/{n}" for k, n in TARGETS}
    assert _lab_state(h) == (set(), set())
    assert h.kube.get(RBAC, "ClusterRole", "foreign-viewer")
