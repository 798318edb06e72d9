"""network-policies grader: the reference and other correct policies pass; the common mistakes
fail with pinned messages that carry the engine's explanation."""

import pytest

from conftest import check_of

LAB = "network-policies"
CHECKS = {"test_policy_exists", "test_policy_selects_db", "test_isolated", "test_ingress", "test_egress"}
# Policies some tests add next to db-policy; reset only removes db-policy (the target), so these
# tests remove their own extras afterwards.
EXTRAS = [("app", "db-egress"), ("app", "allow-all-to-db"), ("app", "default-deny"), ("default", "db-policy")]


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


REAL = "test_real_traffic"
WAITING = "Not checked yet: first fix the policy checks above."


def graded(r) -> set[str]:
    """The checks this backend grades: the real-traffic check needs pods that carry traffic and a
    CNI that enforces policies (kind, real local nodes); on kwok nodes it is reported as
    unavailable, never failed."""
    return {c.id for c in r.checks if getattr(c, "state", "") != "unavailable"}


def failed_ids(r) -> set[str]:
    """The failed policy checks. Where the real-traffic check runs, it waits on them: whenever one
    fails, it must say so (pinned here), and it is left out of the set so that each case states
    the policy checks it expects on every backend."""
    failed = {c.id for c in r.checks if not c.passed} & graded(r)
    if REAL in graded(r) and failed - {REAL}:
        assert check_of(r, REAL).message == WAITING, r.render()
        failed.discard(REAL)
    return failed


def points(r) -> int:
    """The lab's points on this backend: 14, and 2 more where real connections are graded."""
    return 14 + (2 if REAL in graded(r) else 0)


def only_failure(h, check_id: str) -> str:
    """Grade; `check_id` must be the one failing check. Returns its message."""
    r = h.grade()
    assert failed_ids(r) == {check_id}, r.render()
    return check_of(r, check_id).message


def differs(direction: str, *lines: str) -> str:
    """The behaviour checks' message: a header, one line per finding, the way to look."""
    head = "Connections into pod 'db'" if direction == "in" else "Connections out of pod 'db'"
    return "\n".join([f"{head} differ from the task:", *lines, "Look: kubectl describe networkpolicy -n app"])


def test_fresh_start_fails_naming_every_check(lab_harness):
    h = lab_harness(LAB)
    r = h.grade()
    assert not r.passed and r.score == 0 and r.max_score == points(r)
    assert failed_ids(r) == graded(r) - {REAL} == CHECKS
    assert check_of(r, "test_policy_exists").message == (
        "NetworkPolicy 'db-policy' not found in namespace 'app' (kubectl get networkpolicy -n app).")
    assert check_of(r, "test_policy_selects_db").message == (
        'Not checked yet: first fix "NetworkPolicy exists in the namespace".')
    assert check_of(r, "test_ingress").message == (
        'Not checked yet: first fix "db is isolated for both Ingress and Egress".')


def test_reference_solution_passes(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    r = h.grade()
    assert r.passed, r.render()
    assert r.score == r.max_score == points(r)
    assert graded(r) - {REAL} == CHECKS
    assert (REAL in graded(r)) == h.cluster.offers("netpol-enforcement")


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


def test_policy_types_without_egress_ignores_the_egress_rules(lab_harness):
    h = lab_harness(LAB)
    h.apply(policy(types="[Ingress]"))
    r = h.grade()
    assert failed_ids(r) == {"test_isolated", "test_ingress", "test_egress"}
    assert check_of(r, "test_isolated").message == (
        "NetworkPolicy 'db-policy' has egress rules, but its policyTypes is [Ingress]: when policyTypes is "
        "given without Egress, the egress rules are ignored and 'db' stays open for egress. "
        "Look: kubectl get networkpolicy db-policy -n app -o yaml")
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
        "not restricted at all. Look: kubectl describe networkpolicy -n app")


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
    assert only_failure(h, "test_ingress") == differs(
        "in",
        "- db-policy also allows ingress on TCP 1-3305, 3307-65535; UDP (every port); SCTP (every port) from "
        "pods with role=api-pod in app",
        "db-policy ingress rule 1 has no ports, so it allows every port of every protocol.")


def test_wider_cidr_and_missing_egress_ports_fail(lab_harness):
    h = lab_harness(LAB)
    h.apply(policy(cidr="192.168.5.0/24", egress_ports=""))
    assert only_failure(h, "test_egress") == differs(
        "out",
        "- db-policy also allows egress on every port of every protocol to ipBlock 192.168.5.0/24, beyond "
        "192.168.5.10/32",
        "- db-policy also allows egress on TCP 1-79, 81-65535; UDP (every port); SCTP (every port) to "
        "192.168.5.10/32",
        "db-policy egress rule 1 has no ports, so it allows every port of every protocol.")


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
    assert only_failure(h, "test_ingress") == differs(
        "in",
        "- allow-all-to-db also allows ingress on every port of every protocol from every source (every pod and "
        "every address)",
        "allow-all-to-db ingress rule 1 has no 'from', so it matches every source.",
        "allow-all-to-db ingress rule 1 has no ports, so it allows every port of every protocol.")


IN_APP = "from pods with role=api-pod in app"


def _wrong(case_id, variant, direction, *lines):
    return pytest.param(variant, direction, lines, id=case_id)


# One change to the reference each; the message names every opening it adds or removes.
WRONG = [
    _wrong("extra-port-22", dict(ingress_ports="[{protocol: TCP, port: 3306}, {protocol: TCP, port: 22}]"), "in",
           f"- db-policy also allows ingress on TCP 22 {IN_APP}"),
    _wrong("end-port-range", dict(ingress_ports="[{protocol: TCP, port: 3306, endPort: 3400}]"), "in",
           f"- db-policy also allows ingress on TCP 3307-3400 {IN_APP}"),
    _wrong("neighbours", dict(ingress_ports="[{protocol: TCP, port: 3305, endPort: 3307}]"), "in",
           f"- db-policy also allows ingress on TCP 3305, 3307 {IN_APP}"),
    _wrong("sctp-too", dict(ingress_ports="[{port: 3306}, {protocol: SCTP, port: 3306}]"), "in",
           f"- db-policy also allows ingress on SCTP 3306 {IN_APP}"),
    _wrong("every-udp-port", dict(ingress_ports="[{protocol: TCP, port: 3306}, {protocol: UDP}]"), "in",
           f"- db-policy also allows ingress on UDP (every port) {IN_APP}"),
    _wrong("udp-instead-of-tcp", dict(ingress_ports="[{protocol: UDP, port: 3306}]"), "in",
           f"- db-policy also allows ingress on UDP 3306 {IN_APP}",
           f"- no policy allows ingress on TCP 3306 {IN_APP}"),
    _wrong("extra-egress-port", dict(egress_ports="[{protocol: TCP, port: 80}, {protocol: TCP, port: 8080}]"), "out",
           "- db-policy also allows egress on TCP 8080 to 192.168.5.10/32"),
    _wrong("egress-everywhere", dict(cidr="0.0.0.0/0"), "out",
           "- db-policy also allows egress on TCP 80 to ipBlock 0.0.0.0/0, beyond 192.168.5.10/32 (it holds the IPs "
           "of pods app/web, app/api, app/db, staging/api)"),
    _wrong("any-namespace-and", dict(
        ingress_from="[{namespaceSelector: {}, podSelector: {matchLabels: {role: '{{ api_role }}'}}}]"), "in",
        "- db-policy also allows ingress on TCP 3306 from pods with role=api-pod in other namespaces",
        "The peer 'pods role=api-pod in all namespaces' of db-policy ingress rule 1 reaches beyond 'app' because "
        "of its namespaceSelector; a podSelector on its own means pods in the policy's namespace."),
    _wrong("two-peers-are-or", dict(
        ingress_from="[{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: '{{ namespace }}'}}}, "
                     "{podSelector: {matchLabels: {role: '{{ api_role }}'}}}]"), "in",
        "- db-policy also allows ingress on TCP 3306 from the other pods in app",
        "In db-policy ingress rule 1, namespaceSelector and podSelector are two separate peers ('- ' before "
        "each), and peers are ORed: every pod of the selected namespaces matches."),
    _wrong("wrong-peer-label", dict(ingress_from="[{podSelector: {matchLabels: {role: api}}}]"), "in",
           f"- no policy allows ingress on TCP 3306 {IN_APP}",
           "The peer 'pods role=api in namespace app' of db-policy ingress rule 1 matches none of the lab's pods "
           "(kubectl get pods -A --show-labels)."),
    _wrong("wrong-named-port-protocol", dict(ingress_ports="[{protocol: UDP, port: '{{ db_port_name }}'}]"), "in",
           f"- no policy allows ingress on TCP 3306 {IN_APP}",
           "db-policy ingress rule 1 names port 'mysql' (UDP), but pod 'db' has no UDP container port of that name "
           "(its container ports: mysql 3306/TCP), so it matches nothing (kubectl get pod db -n app -o yaml)."),
]


@pytest.mark.parametrize("variant,direction,lines", WRONG)
def test_wrong_policy_is_reported_line_by_line(lab_harness, variant, direction, lines):
    h = lab_harness(LAB)
    h.apply(policy(**variant))
    check_id = "test_ingress" if direction == "in" else "test_egress"
    assert only_failure(h, check_id) == differs(direction, *lines)


def test_named_ports_that_resolve_to_nothing_fail(lab_harness):
    h = lab_harness(LAB)
    h.apply(policy(ingress_ports="[{port: http}]", egress_ports="[{protocol: TCP, port: http}]"))
    r = h.grade()
    assert failed_ids(r) == {"test_ingress", "test_egress"}
    assert check_of(r, "test_ingress").message == differs(
        "in",
        "- no policy allows ingress on TCP 3306 from pods with role=api-pod in app",
        "db-policy ingress rule 1 names port 'http' (TCP), but pod 'db' has no TCP container port of that name "
        "(its container ports: mysql 3306/TCP), so it matches nothing (kubectl get pod db -n app -o yaml).")
    assert check_of(r, "test_egress").message == differs(
        "out",
        "- no policy allows egress on TCP 80 to 192.168.5.10/32",
        "db-policy egress rule 1 names port 'http': a named port is looked up among a destination pod's container "
        "ports, so it never matches an ipBlock address.")


def test_api_pod_ip_as_ipblock_fails_saying_why(lab_harness):
    h = lab_harness(LAB)
    ip = h.kube.core.read_namespaced_pod(h.params["api_pod"], h.params["namespace"]).status.pod_ip
    assert ip
    h.apply(policy(ingress_from=f"[{{ipBlock: {{cidr: '{ip}/32'}}}}]"))
    assert only_failure(h, "test_ingress") == differs(
        "in",
        f"- db-policy also allows ingress on TCP 3306 from ipBlock {ip}/32 (it holds the IP of pod app/api)",
        "- no policy allows ingress on TCP 3306 from a new pod with role=api-pod in app (the api pod once it is "
        "recreated, say)",
        f"db-policy ingress rule 1 lets pod app/api in by its current IP (ipBlock {ip}/32). Pod IPs change "
        "whenever a pod is recreated, so the rule follows an address, not the api pod: the pods the task names "
        "are the ones labelled role=api-pod, which only a podSelector on that label keeps finding.")


def test_default_deny_for_the_whole_namespace_touches_the_other_pods(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.apply("""
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny, namespace: '{{ namespace }}'}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
""")
    r = h.grade()
    assert check_of(r, "test_policy_selects_db").message == (
        "NetworkPolicy 'default-deny' in 'app' has podSelector {} (every pod), which also selects web, api: it "
        "isolates them for Ingress and Egress too, and the task leaves their traffic as it is.\n"
        "Look: kubectl get pods -n app --show-labels")


def test_selecting_every_pod_fails(lab_harness):
    h = lab_harness(LAB)
    h.apply(policy(selector="{}"))
    r = h.grade()
    assert failed_ids(r) == {"test_policy_selects_db", "test_isolated", "test_ingress", "test_egress"}
    assert check_of(r, "test_policy_selects_db").message == (
        "NetworkPolicy 'db-policy' in 'app' has podSelector {} (every pod), which also selects web, api: it "
        "isolates them for Ingress and Egress too, and the task leaves their traffic as it is.\n"
        "Look: kubectl get pods -n app --show-labels")


def test_policy_in_the_wrong_namespace_fails(lab_harness):
    h = lab_harness(LAB)
    h.apply(policy(ns="default"))
    assert check_of(h.grade(), "test_policy_exists").message == (
        "NetworkPolicy 'db-policy' is in namespace default, not 'app'. A policy only selects pods of its "
        "own namespace (kubectl get networkpolicy -A).")


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
