"""ckalab.rbac.extra_rights on hand-written grants: the rules of the authorizer, no cluster needed."""

from ckalab.rbac import Allowed, Grant, Subject, extra_rights

ALLOWED = [Allowed("pods", ("create", "list", "delete"), namespace="default")]


def grant(rule, ns="default", source="Role 'r' via RoleBinding 'b' in 'default'"):
    return Grant(rule, ns, source)


def test_exactly_the_allowed_rights_are_not_extra():
    assert extra_rights([grant({"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "create"]}),
                         grant({"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]})], ALLOWED) == []


def test_resource_names_narrow_but_do_not_widen():
    narrowed = {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"], "resourceNames": ["web"]}
    assert extra_rights([grant(narrowed)], ALLOWED) == []
    named_get = {**narrowed, "verbs": ["get"]}
    assert extra_rights([grant(named_get)], ALLOWED) == [
        "get on pods named web in the core API group in 'default' (from Role 'r' via RoleBinding 'b' in 'default')"]


def test_wildcards_and_subresources_are_extra():
    rules = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]},
             {"apiGroups": ["*"], "resources": ["pods"], "verbs": ["list"]},
             {"apiGroups": [""], "resources": ["*"], "verbs": ["list"]},
             {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]
    out = extra_rights([grant(r) for r in rules], ALLOWED)
    assert [o.split(" (from")[0] for o in out] == [
        "every verb (*) on pods in the core API group in 'default'",
        "list on pods in every API group (*) in 'default'",
        "list on every resource (*) in the core API group in 'default'",
        "create on pods/exec in the core API group in 'default'"]


def test_scope_a_cluster_wide_binding_is_more_than_one_namespace():
    rule = {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
    assert extra_rights([grant(rule, None, "ClusterRole 'c' via ClusterRoleBinding 'cb'")], ALLOWED) == [
        "list on pods in the core API group in every namespace and cluster-wide "
        "(from ClusterRole 'c' via ClusterRoleBinding 'cb')"]
    assert extra_rights([grant(rule, "kube-system")], ALLOWED)[0].startswith("list on pods in the core API group in "
                                                                             "'kube-system'")


def test_what_a_namespaced_binding_cannot_grant_is_not_counted():
    nodes = {"apiGroups": [""], "resources": ["nodes"], "verbs": ["delete"]}
    urls = {"nonResourceURLs": ["/metrics"], "verbs": ["get"]}
    assert extra_rights([grant(nodes), grant(urls)], ALLOWED) == []
    assert extra_rights([grant(urls, None, "ClusterRole 'm' via ClusterRoleBinding 'm'")], ALLOWED) == [
        "get on the non-resource URLs /metrics (from ClusterRole 'm' via ClusterRoleBinding 'm')"]


def test_service_account_subjects_match_by_identity():
    sa = Subject.service_account("default", "dashboard-sa")
    assert sa.named_by({"kind": "ServiceAccount", "name": "dashboard-sa"}, "default")
    assert not sa.named_by({"kind": "ServiceAccount", "name": "dashboard-sa", "namespace": "kube-system"}, "default")
    assert sa.named_by({"kind": "Group", "name": "system:serviceaccounts:default"}, "default")
    assert sa.named_by({"kind": "User", "name": "system:serviceaccount:default:dashboard-sa"}, None)
    assert not sa.named_by({"kind": "User", "name": "dashboard-sa"}, "default")
