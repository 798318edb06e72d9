"""network-policies grader: the reference and other correct policies pass; the common mistakes
fail with pinned messages that carry the engine's explanation."""

import pytest

from conftest import check_of, failed_ids

LAB = "network-policies"
CHECKS = {"test_policy_exists", "test_policy_selects_db", "test_isolated", "test_ingress", "test_egress"}
# Policies some tests add next to db-policy; reset only removes db-policy (the target), so these
# tests remove their own extras afterwards.
EXTRAS = [("app", "db-egress"), ("app", "allow-all-to-db"), ("default", "db-policy")]


@pytest.fixture(autouse=True)
def _remove_extras(cluster):
    yield
    from ckalab.kube import Kube

    k = Kube(cluster.kubeconfig)
    for ns, name in EXTRAS:
        k.delete("networking.k8s.io/v1", "NetworkPolicy", name, ns)


def policy(ingress_from="[{podSelector: {matchLabels: {role: '{{ api_role }}'}}}]",
           ingress_ports="[{protocol: TCP, port: {{ db_port }}}]", types="[Ingress, Egress]",
           cidr="'{{ egress_cidr }}'", egress_ports="[{protocol: TCP, port: {{ egress_port }}}]",
           selector="{matchLabels: {role: '{{ db_role }}'}}", name="{{ policy }}", ns="{{ namespace }}"):
    """db-policy as the reference writes it, with one part swapped for a variant."""
    ports_in = f"\n    ports: {ingress_ports}" if ingress_ports else ""
    ports_out = f"\n    ports: {egress_ports}" if egress_ports else ""
    return f"""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: '{name}', namespace: '{ns}'}}
spec:
  podSelector: {selector}
  policyTypes: {types}
  ingress:
  - from: {ingress_from}{ports_in}
  egress:
  - to: [{{ipBlock: {{cidr: {cidr}}}}}]{ports_out}
"""


def test_fresh_start_fails_naming_every_check(lab_harness):
    h = lab_harness(LAB)
    r = h.grade()
    assert not r.passed and r.score == 0 and r.max_score == 14
    # The real-traffic check needs a CNI that enforces policies: on local it is left out, not failed.
    assert failed_ids(r) == {c.id for c in r.checks} == CHECKS
    assert check_of(r, "test_policy_exists").message == (
        "NetworkPolicy 'db-policy' not found in namespace 'app'. Write it in a file and apply it: "
        "kubectl apply -f db-policy.yaml (kubectl get networkpolicy -n app).")
    assert check_of(r, "test_policy_selects_db").message == (
        'Not checked yet: first fix "NetworkPolicy exists in the namespace".')
    assert check_of(r, "test_ingress").message == (
        'Not checked yet: first fix "db is isolated for both Ingress and Egress".')


def test_reference_solution_passes(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    r = h.grade()
    assert r.passed, r.render()
    assert r.score == r.max_score == 14
    assert {c.id for c in r.checks} == CHECKS


def test_named_port_and_match_expressions_pass(lab_harness):
    h = lab_harness(LAB)
    h.apply(policy(
        selector="{matchExpressions: [{key: role, operator: In, values: ['{{ db_role }}']}]}",
        ingress_from="[{podSelector: {matchExpressions: [{key: role, operator: In, values: ['{{ api_role }}']}]}}]",
        ingress_ports="[{port: '{{ db_port_name }}'}]"))
    r = h.grade()
    assert r.passed, r.render()


def test_namespace_selector_by_name_and_pod_selector_pass(lab_harness):
    h = lab_harness(LAB)
    h.apply(policy(ingress_from="[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: '{{ namespace }}'}}, "
                                "podSelector: {matchLabels: {role: '{{ api_role }}'}}}]"))
    assert h.grade().passed


def test_ingress_and_egress_split_over_two_policies_pass(lab_harness):
    h = lab_harness(LAB)
    h.apply("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: '{{ policy }}', namespace: '{{ namespace }}'}
spec:
  podSelector: {matchLabels: {role: '{{ db_role }}'}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: '{{ api_role }}'}}}]
    ports: [{protocol: TCP, port: {{ db_port }}}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-egress, namespace: '{{ namespace }}'}
spec:
  podSelector: {matchLabels: {role: '{{ db_role }}'}}
  policyTypes: [Egress]
  egress:
  - to: [{ipBlock: {cidr: '{{ egress_cidr }}'}}]
    ports: [{protocol: TCP, port: {{ egress_port }}}]
""")
    r = h.grade()
    assert r.passed, r.render()


def test_any_namespace_peer_lets_the_other_namespace_in(lab_harness):
    h = lab_harness(LAB)
    h.apply(policy(ingress_from="[{namespaceSelector: {}, podSelector: {matchLabels: {role: '{{ api_role }}'}}}]"))
    r = h.grade()
    assert failed_ids(r) == {"test_ingress"}
    assert check_of(r, "test_ingress").message == (
        "Connections into pod 'db' are not limited as the task asks:\n"
        "- expected denied, but staging/api -> app/db TCP/3306 is allowed: ingress to app/db: isolated by "
        "db-policy; allowed by db-policy ingress rule 1 (peer 1: pods role=api-pod in all namespaces; port "
        "TCP/3306)\n"
        "The peer 'pods role=api-pod in all namespaces' reaches beyond 'app' because of its namespaceSelector. "
        "A podSelector on its own already means pods in the policy's namespace: drop the namespaceSelector, or "
        "make it select only 'app' (kubernetes.io/metadata.name: app).\n"
        "Look: kubectl describe networkpolicy -n app")


def test_namespace_and_pod_selector_as_two_peers_are_ored(lab_harness):
    h = lab_harness(LAB)
    h.apply(policy(ingress_from="[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: "
                                "'{{ namespace }}'}}}, {podSelector: {matchLabels: {role: '{{ api_role }}'}}}]"))
    r = h.grade()
    assert failed_ids(r) == {"test_ingress"}
    assert check_of(r, "test_ingress").message == (
        "Connections into pod 'db' are not limited as the task asks:\n"
        "- expected denied, but app/web -> app/db TCP/3306 is allowed: ingress to app/db: isolated by db-policy; "
        "allowed by db-policy ingress rule 1 (peer 1: all pods in namespaces kubernetes.io/metadata.name=app; "
        "port TCP/3306)\n"
        "In db-policy ingress rule 1, namespaceSelector and podSelector are two separate peers ('- ' before "
        "each), and peers are ORed: every pod of the selected namespaces matches. To require both, put them in "
        "ONE peer of 'from' (no '- ' before podSelector).\n"
        "Look: kubectl describe networkpolicy -n app")


def test_policy_types_without_egress_ignores_the_egress_rules(lab_harness):
    h = lab_harness(LAB)
    h.apply(policy(types="[Ingress]"))
    r = h.grade()
    assert failed_ids(r) == {"test_isolated", "test_ingress", "test_egress"}
    assert check_of(r, "test_isolated").message == (
        "NetworkPolicy 'db-policy' has egress rules, but its policyTypes is [Ingress]: when policyTypes is "
        "given without Egress, the egress rules are ignored and 'db' stays open for egress. List both: "
        "policyTypes: [Ingress, Egress].")
    assert check_of(r, "test_egress").message == (
        'Not checked yet: first fix "db is isolated for both Ingress and Egress".')


def test_ingress_only_policy_leaves_egress_open(lab_harness):
    h = lab_harness(LAB)
    h.apply("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: '{{ policy }}', namespace: '{{ namespace }}'}
spec:
  podSelector: {matchLabels: {role: '{{ db_role }}'}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: '{{ api_role }}'}}}]
    ports: [{protocol: TCP, port: {{ db_port }}}]
""")
    r = h.grade()
    assert failed_ids(r) == {"test_isolated", "test_ingress", "test_egress"}
    assert check_of(r, "test_isolated").message == (
        "No NetworkPolicy isolates pod 'db' for Egress (db-policy has policyTypes [Ingress]), so its egress is "
        "not restricted at all. Add Egress to policyTypes and an egress rule. "
        "Look: kubectl describe networkpolicy -n app")


def test_ports_as_a_map_is_rejected_and_no_ports_opens_every_port(lab_harness):
    h = lab_harness(LAB)
    # What the learner meets first: the API server refuses a map where a list belongs ...
    bad = h.kubectl("apply", "-f", "-", input=h.lab.render(policy(ingress_ports="{protocol: TCP, port: 3306}")),
                    check=False)
    assert bad.returncode != 0
    assert "cannot unmarshal object into Go struct field NetworkPolicyIngressRule.spec.ingress.ports" in bad.stderr
    assert check_of(h.grade(), "test_policy_exists").message.startswith("NetworkPolicy 'db-policy' not found")
    # ... and dropping `ports` to get it accepted opens every port.
    h.apply(policy(ingress_ports=""))
    r = h.grade()
    assert failed_ids(r) == {"test_ingress"}
    assert check_of(r, "test_ingress").message == (
        "Connections into pod 'db' are not limited as the task asks:\n"
        "- expected denied, but app/api -> app/db TCP/80 is allowed: ingress to app/db: isolated by db-policy; "
        "allowed by db-policy ingress rule 1 (peer 1: pods role=api-pod in namespace app; port any)\n"
        "db-policy ingress rule 1 has no ports, so it opens every port. ports is a list of entries: "
        "ports: [{protocol: TCP, port: 3306}].\n"
        "Look: kubectl describe networkpolicy -n app")


def test_wider_cidr_and_missing_egress_ports_fail(lab_harness):
    h = lab_harness(LAB)
    h.apply(policy(cidr="192.168.5.0/24", egress_ports=""))
    r = h.grade()
    assert failed_ids(r) == {"test_egress"}
    assert check_of(r, "test_egress").message == (
        "Connections out of pod 'db' are not limited as the task asks:\n"
        "- expected denied, but app/db -> 192.168.5.11 TCP/80 is allowed: egress from app/db: isolated by "
        "db-policy; allowed by db-policy egress rule 1 (peer 1: ipBlock 192.168.5.0/24; port any)\n"
        "- expected denied, but app/db -> 192.168.5.10 TCP/443 is allowed: egress from app/db: isolated by "
        "db-policy; allowed by db-policy egress rule 1 (peer 1: ipBlock 192.168.5.0/24; port any)\n"
        "The ipBlock 192.168.5.0/24 covers more than 192.168.5.10/32: use exactly 192.168.5.10/32.\n"
        "db-policy egress rule 1 has no ports, so it opens every port. ports is a list of entries: "
        "ports: [{protocol: TCP, port: 80}].\n"
        "Look: kubectl describe networkpolicy -n app")


def test_another_policy_can_open_what_db_policy_closes(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.apply("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: allow-all-to-db, namespace: '{{ namespace }}'}
spec:
  podSelector: {matchLabels: {role: '{{ db_role }}'}}
  ingress: [{}]
""")
    r = h.grade()
    assert failed_ids(r) == {"test_ingress"}
    assert check_of(r, "test_ingress").message == (
        "Connections into pod 'db' are not limited as the task asks:\n"
        "- expected denied, but app/web -> app/db TCP/3306 is allowed: ingress to app/db: isolated by "
        "allow-all-to-db, db-policy; allowed by allow-all-to-db ingress rule 1 (every source; port any)\n"
        "- expected denied, but staging/api -> app/db TCP/3306 is allowed: ingress to app/db: isolated by "
        "allow-all-to-db, db-policy; allowed by allow-all-to-db ingress rule 1 (every source; port any)\n"
        "- expected denied, but app/api -> app/db TCP/80 is allowed: ingress to app/db: isolated by "
        "allow-all-to-db, db-policy; allowed by allow-all-to-db ingress rule 1 (every source; port any)\n"
        "allow-all-to-db ingress rule 1 has no 'from', so it matches every source.\n"
        "allow-all-to-db ingress rule 1 has no ports, so it opens every port. ports is a list of entries: "
        "ports: [{protocol: TCP, port: 3306}].\n"
        "Look: kubectl describe networkpolicy -n app")


def test_selecting_every_pod_fails(lab_harness):
    h = lab_harness(LAB)
    h.apply(policy(selector="{}"))
    r = h.grade()
    assert failed_ids(r) == {"test_policy_selects_db", "test_isolated", "test_ingress", "test_egress"}
    assert check_of(r, "test_policy_selects_db").message == (
        "NetworkPolicy 'db-policy' has podSelector {} (every pod), which also selects web, api: it would "
        "isolate them too. Select only role=db.")


def test_policy_in_the_wrong_namespace_fails(lab_harness):
    h = lab_harness(LAB)
    h.apply(policy(ns="default"))
    assert check_of(h.grade(), "test_policy_exists").message == (
        "NetworkPolicy 'db-policy' is in namespace default, not 'app'. A policy only selects pods of its "
        "own namespace: create it with -n app.")


def test_missing_lab_pod_is_reported(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.kubectl("delete", "pod", "db", "-n", "app", "--wait=true")
    r = h.grade()
    assert check_of(r, "test_policy_selects_db").message == (
        "The lab's pod(s) app/db are missing: the task is about them. Run 'ckalab reset network-policies' "
        "to create them again.")


def _snapshot(h):
    pods = h.kube.core.list_pod_for_all_namespaces(label_selector=f"ckalab.io/lab={LAB}").items
    nss = [h.kube.core.read_namespace(n) for n in (h.params["namespace"], h.params["other_namespace"])]
    return sorted((o.metadata.namespace or "", o.metadata.name, o.metadata.uid, o.metadata.resource_version,
                   tuple(sorted((o.metadata.labels or {}).items()))) for o in [*pods, *nss])


def test_start_twice_equals_once(lab_harness):
    h = lab_harness(LAB)
    first = _snapshot(h)
    assert len(first) == 6  # four pods, two namespaces
    h.start()
    assert _snapshot(h) == first


def test_reset_restores_a_relabelled_pod(lab_harness):
    h = lab_harness(LAB)
    h.kubectl("label", "pod", "db", "-n", "app", "role=other", "--overwrite")
    h.reset()
    assert h.kube.core.read_namespaced_pod("db", "app").metadata.labels["role"] == "db"
