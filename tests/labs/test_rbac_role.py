"""rbac-role grader: passes on the reference and on other correct forms, fails with pinned messages."""

from conftest import check_of, failed_ids

LAB = "rbac-role"


def test_fresh_start_fails_naming_every_check(lab_harness):
    h = lab_harness(LAB)
    r = h.grade()
    assert not r.passed and r.score == 0
    assert failed_ids(r) == {c.id for c in r.checks}
    assert check_of(r, "test_role_exists").message == (
        "Role 'developer' not found in namespace 'default' (kubectl get roles -n default).")
    assert check_of(r, "test_role_rules").message == 'Not checked yet: first fix "Role exists".'


def test_reference_solution_passes(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    r = h.grade()
    assert r.passed, r.render()
    assert r.score == r.max_score == 10


def test_imperative_kubectl_passes(lab_harness):
    h = lab_harness(LAB)
    h.kubectl("create", "role", "developer", "--verb=create,list,delete", "--resource=pods", "-n", "default")
    h.kubectl("create", "rolebinding", "dev-user-binding", "--role=developer", "--user=dev-user", "-n", "default")
    assert h.grade().passed


def test_rules_split_across_two_rules_pass(lab_harness):
    h = lab_harness(LAB)
    h.apply("""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: developer, namespace: default}
rules:
- {apiGroups: [""], resources: [pods], verbs: [create, list]}
- {apiGroups: [""], resources: [pods], verbs: [delete]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: dev-user-binding, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: developer}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: dev-user}]
""")
    assert h.grade().passed


def test_missing_verb_fails_with_message(lab_harness):
    h = lab_harness(LAB)
    h.kubectl("create", "role", "developer", "--verb=create,list", "--resource=pods", "-n", "default")
    h.kubectl("create", "rolebinding", "dev-user-binding", "--role=developer", "--user=dev-user", "-n", "default")
    r = h.grade()
    assert failed_ids(r) == {"test_role_rules", "test_user_can"}
    assert check_of(r, "test_role_rules").message == (
        "Role 'developer' does not allow delete on pods (core API group \"\"). Expected verbs: create, list, delete.")
    assert check_of(r, "test_user_can").message == (
        "SubjectAccessReview: 'dev-user' cannot delete pods in namespace 'default'.")


def test_binding_to_group_fails(lab_harness):
    h = lab_harness(LAB)
    h.kubectl("create", "role", "developer", "--verb=create,list,delete", "--resource=pods", "-n", "default")
    h.kubectl("create", "rolebinding", "dev-user-binding", "--role=developer", "--group=dev-user", "-n", "default")
    r = h.grade()
    assert "test_binding" in failed_ids(r)
    assert check_of(r, "test_binding").message == (
        "RoleBinding 'dev-user-binding' binds Group 'dev-user'; expected the User 'dev-user' "
        "(kind: User, not Group or ServiceAccount).")


def test_overgranting_fails(lab_harness):
    h = lab_harness(LAB)
    h.kubectl("create", "role", "developer", "--verb=create,list,delete,get", "--resource=pods,secrets", "-n", "default")
    h.kubectl("create", "rolebinding", "dev-user-binding", "--role=developer", "--user=dev-user", "-n", "default")
    r = h.grade()
    assert failed_ids(r) == {"test_no_overgrant"}
    assert check_of(r, "test_no_overgrant").message == (
        "'dev-user' gets more than create, list and delete on pods in 'default':\n"
        "- get on pods in the core API group in 'default' (from Role 'developer' via RoleBinding 'dev-user-binding' "
        "in 'default')\n"
        "- create, list, delete, get on secrets in the core API group in 'default' (from Role 'developer' via "
        "RoleBinding 'dev-user-binding' in 'default')\n"
        "Look: kubectl auth can-i --list --as dev-user -n default")


def test_resource_kind_name_instead_of_plural_fails(lab_harness):
    """Erratum: RBAC resources are lowercase plurals; 'Pod' is accepted by the API but never matches."""
    h = lab_harness(LAB)
    h.apply("""
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: developer, namespace: default}
rules:
- {apiGroups: [""], resources: [Pod], verbs: [create, list, delete]}
""")
    h.kubectl("create", "rolebinding", "dev-user-binding", "--role=developer", "--user=dev-user", "-n", "default")
    r = h.grade()
    assert failed_ids(r) == {"test_role_rules", "test_user_can"}
    assert check_of(r, "test_role_rules").message == (
        "Role 'developer' names resources ['Pod']: resources are lowercase plurals, use 'pods'.")
