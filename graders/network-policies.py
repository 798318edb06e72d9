"""Grader for network-policies: only the namespace's API pods reach db on its port, and db reaches
only one address on one port.

Pods on the local backend do not carry traffic, so the verdicts come from ckalab.netpol applied
to the LIVE pods, namespaces and every NetworkPolicy in the cluster (another policy in the
namespace can open what db-policy closes, because policies add up). On kind, whose CNI enforces
policies, one more check sends real connections between the lab's own pods.

Correct-but-different forms accepted: the named port instead of the number; matchExpressions
instead of matchLabels; a peer that ANDs podSelector with a namespaceSelector naming only this
namespace; and the rules split over db-policy plus a second policy. The task names db-policy, so
it must exist and select db, but what the learner is asked to achieve is the effective traffic,
and Kubernetes ORs policies: splitting ingress and egress is a common, correct style.
"""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from ckalab.grading import check, expect, fail
from ckalab.netpol import EGRESS, INGRESS, Network, Policy, describe_selector

LOOK = "kubectl describe networkpolicy -n {ns}"


@dataclass
class World:
    """One snapshot of the live objects, read once per grading run."""
    net: Network
    names: dict[str, str]  # role in the task -> 'namespace/name'

    def pod(self, role: str):
        try:
            return self.net.pod(self.names[role])
        except KeyError:
            return None


@pytest.fixture(scope="session")
def world(kube, lab) -> World:
    p = lab.params
    ser = kube.api.sanitize_for_serialization
    pods = [ser(x) for ns in (p["namespace"], p["other_namespace"])
            for x in kube.core.list_namespaced_pod(ns).items]
    namespaces = [ser(x) for x in kube.core.list_namespace().items]
    policies = [ser(x) for x in kube.net.list_network_policy_for_all_namespaces().items]
    ns, other = p["namespace"], p["other_namespace"]
    names = {"web": f"{ns}/{p['web_pod']}", "api": f"{ns}/{p['api_pod']}", "db": f"{ns}/{p['db_pod']}",
             "other_api": f"{other}/{p['api_pod']}"}
    return World(Network(policies, pods, namespaces), names)


def _policy(world: World, lab) -> Policy | None:
    p = lab.params
    return next((x for x in world.net.policies if x.name == p["policy"] and x.namespace == p["namespace"]), None)


def _need_pods(world: World, lab) -> None:
    missing = [world.names[r] for r in ("web", "api", "db", "other_api") if world.pod(r) is None]
    expect(not missing, f"The lab's pod(s) {', '.join(missing)} are missing: the task is about them. "
           f"Run 'ckalab reset {lab.id}' to create them again.")


def _sel_text(selector: dict) -> str:
    return describe_selector(selector) or "{} (every pod)"


@check(2, "NetworkPolicy exists in the namespace", hint="kubectl get networkpolicy -A")
def test_policy_exists(world, lab):
    p = lab.params
    if _policy(world, lab):
        return
    elsewhere = sorted(x.namespace for x in world.net.policies if x.name == p["policy"])
    if elsewhere:
        fail(f"NetworkPolicy '{p['policy']}' is in namespace {', '.join(elsewhere)}, not '{p['namespace']}'. "
             f"A policy only selects pods of its own namespace: create it with -n {p['namespace']}.")
    fail(f"NetworkPolicy '{p['policy']}' not found in namespace '{p['namespace']}'. Write it in a file and "
         f"apply it: kubectl apply -f {p['policy']}.yaml (kubectl get networkpolicy -n {p['namespace']}).")


@check(2, "the policy selects the db pod, and only it", after="test_policy_exists",
       hint="kubectl get pods -n NAMESPACE --show-labels")
def test_policy_selects_db(world, lab):
    p = lab.params
    _need_pods(world, lab)
    pol, db = _policy(world, lab), world.pod("db")
    sel = pol.spec.get("podSelector") or {}
    expect(pol.selects(db), f"NetworkPolicy '{p['policy']}' has podSelector {_sel_text(sel)}, which does not select "
           f"pod '{p['db_pod']}' (labels {describe_selector({'matchLabels': db.labels})}). Select it by its "
           f"label: podSelector: {{matchLabels: {{role: {p['db_role']}}}}}. "
           f"Look: kubectl get pods -n {p['namespace']} --show-labels")
    extra = [world.pod(r).name for r in ("web", "api") if pol.selects(world.pod(r))]
    expect(not extra, f"NetworkPolicy '{p['policy']}' has podSelector {_sel_text(sel)}, which also selects "
           f"{', '.join(extra)}: it would isolate them too. Select only role={p['db_role']}.")


@check(2, "db is isolated for both Ingress and Egress", after="test_policy_selects_db",
       hint="policyTypes: [Ingress, Egress]; kubectl get networkpolicy NAME -n NAMESPACE -o yaml")
def test_isolated(world, lab):
    p = lab.params
    pol, db = _policy(world, lab), world.pod("db")
    for direction in (INGRESS, EGRESS):
        if world.net.isolating(db, direction):
            continue
        key = direction.lower()
        types = f"[{', '.join(pol.policy_types)}]"
        if pol.spec.get(key):
            fail(f"NetworkPolicy '{p['policy']}' has {key} rules, but its policyTypes is {types}: when policyTypes "
                 f"is given without {direction}, the {key} rules are ignored and '{p['db_pod']}' stays open for "
                 f"{key}. List both: policyTypes: [Ingress, Egress].")
        fail(f"No NetworkPolicy isolates pod '{p['db_pod']}' for {direction} ({p['policy']} has policyTypes "
             f"{types}), so its {key} is not restricted at all. Add {direction} to policyTypes and an {key} "
             f"rule. Look: {LOOK.format(ns=p['namespace'])}")


# --- behaviour: the connections the task asks for, judged over all policies ----------------------

def _cases(world: World, lab) -> dict[str, list[tuple]]:
    """(source, destination, port, expected allowed) per direction. A 'denied' case must be denied
    by the direction under test (db's own ingress or egress), not by some other pod's policy."""
    p = lab.params
    n = world.names
    block = ipaddress.ip_network(p["egress_cidr"], strict=False)
    inside, outside = block.network_address, block.broadcast_address + 1
    db_port, out_port = int(p["db_port"]), int(p["egress_port"])
    return {
        INGRESS: [(n["api"], n["db"], db_port, True), (n["web"], n["db"], db_port, False),
                  (n["other_api"], n["db"], db_port, False), (n["api"], n["db"], 80 if db_port != 80 else 8080, False)],
        EGRESS: [(n["db"], str(inside), out_port, True), (n["db"], str(outside), out_port, False),
                 (n["db"], str(inside), 443 if out_port != 443 else 8443, False), (n["db"], n["web"], 80, False)],
    }


def _failures(world: World, lab, direction: str) -> list[tuple]:
    out = []
    for src, dst, port, want in _cases(world, lab)[direction]:
        v = world.net.check(src, dst, port)
        side = v.ingress if direction == INGRESS else v.egress
        if want and not v.allowed:
            out.append((v, want, f"- expected allowed, but {v.explain()}"))
        elif not want and side.allowed:
            out.append((v, want, f"- expected denied, but {v.connection} is allowed: {side.explain()}"))
    return out


def _errata(world: World, lab, failures: list[tuple], direction: str) -> list[str]:
    """Name the common mistakes behind wrongly allowed connections, once each."""
    p = lab.params
    word = direction.lower()
    want_port = int(p["db_port"] if direction == INGRESS else p["egress_port"])
    notes: list[str] = []
    for v, want, _ in failures:
        if want:
            continue
        side = v.ingress if direction == INGRESS else v.egress
        for m in side.matches:
            rule = m.policy.rules(direction)[m.rule - 1]
            peers = rule.get("from" if direction == INGRESS else "to") or []
            peer = peers[m.peer - 1] if m.peer else {}
            if m.port_text == "any" and v.port != want_port:
                notes.append(f"{m.policy.name} {word} rule {m.rule} has no ports, so it opens every port. ports is a "
                             f"list of entries: ports: [{{protocol: TCP, port: {want_port}}}].")
            if m.peer is None and v.port == want_port:
                key, who = ("from", "source") if direction == INGRESS else ("to", "destination")
                notes.append(f"{m.policy.name} {word} rule {m.rule} has no '{key}', so it matches every {who}.")
            if direction == INGRESS and v.src == world.names["other_api"] and peer.get("namespaceSelector") is not None:
                notes.append(f"The peer '{m.peer_text}' reaches beyond '{p['namespace']}' because of its "
                             f"namespaceSelector. A podSelector on its own already means pods in the policy's "
                             f"namespace: drop the namespaceSelector, or make it select only '{p['namespace']}' "
                             f"(kubernetes.io/metadata.name: {p['namespace']}).")
            if (peer.get("namespaceSelector") is not None and peer.get("podSelector") is None
                    and any(q.get("podSelector") is not None for q in peers if q is not peer)):
                key = "from" if direction == INGRESS else "to"
                notes.append(f"In {m.policy.name} {word} rule {m.rule}, namespaceSelector and podSelector are two "
                             f"separate peers ('- ' before each), and peers are ORed: every pod of the selected "
                             f"namespaces matches. To require both, put them in ONE peer of '{key}' (no '- ' "
                             f"before podSelector).")
            block = peer.get("ipBlock") or {}
            if direction == EGRESS and v.port == want_port and block.get("cidr") not in (None, p["egress_cidr"]):
                notes.append(f"The ipBlock {block['cidr']} covers more than {p['egress_cidr']}: use exactly "
                             f"{p['egress_cidr']}.")
    return list(dict.fromkeys(notes))


def _report(world: World, lab, direction: str) -> None:
    p = lab.params
    _need_pods(world, lab)
    failures = _failures(world, lab, direction)
    if failures:
        way = "into" if direction == INGRESS else "out of"
        lines = [f"Connections {way} pod '{p['db_pod']}' are not limited as the task asks:",
                 *(line for _, _, line in failures), *_errata(world, lab, failures, direction),
                 f"Look: {LOOK.format(ns=p['namespace'])}"]
        fail("\n".join(lines))


@check(4, "only the namespace's API pods reach db, on its port only", after="test_isolated",
       hint="a podSelector peer alone means pods in the policy's namespace; ports is a list")
def test_ingress(world, lab):
    _report(world, lab, INGRESS)


@check(4, "db reaches only the allowed address and port", after="test_isolated",
       hint="egress: - to: [ipBlock: {cidr: ...}] with ports: [{protocol: TCP, port: ...}]")
def test_egress(world, lab):
    _report(world, lab, EGRESS)


# --- real traffic, only where the CNI enforces policies ---------------------------------------------

@pytest.fixture
def enforcing(cluster):
    """Skip (at setup, which the grading engine does not record) unless pods carry real traffic:
    on the local backend kwok only pretends to run them, so this check is simply not part of
    the grade there instead of failing or giving free points."""
    if getattr(cluster, "backend", None) != "kind":
        pytest.skip("no pod traffic on this backend")
    return cluster


def _connect(kubeconfig: str, pod, ip: str, port: int) -> str:
    """'connected', 'blocked' or an error text, from `agnhost connect` run inside `pod`."""
    kubectl = Path(sys.executable).parent / "kubectl"
    target = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    cmd = [str(kubectl) if kubectl.exists() else (shutil.which("kubectl") or "kubectl"), "--kubeconfig", kubeconfig,
           "exec", "-n", pod.namespace, pod.name, "--", "/agnhost", "connect", target, "--timeout=2s",
           "--protocol=tcp"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "kubectl exec did not finish in 20s"
    out = (proc.stdout + proc.stderr).strip()
    if proc.returncode == 0:
        return "connected"
    return "blocked" if "TIMEOUT" in out else out.splitlines()[0] if out else f"exit {proc.returncode}"


# Not `after=`: the engine would report "Not checked yet" before the fixture could skip, which
# would add a failed check on local. The same dependency is enforced inside instead.
@check(2, "real connections between the lab's pods follow the policy",
       hint="kubectl exec -n NAMESPACE POD -- /agnhost connect IP:PORT --timeout=2s")
def test_real_traffic(enforcing, world, lab):
    p = lab.params
    _need_pods(world, lab)
    if not _policy(world, lab) or _failures(world, lab, INGRESS) or _failures(world, lab, EGRESS):
        fail("Not checked yet: first fix the policy checks above.")
    pods = {r: world.pod(r) for r in ("web", "api", "db", "other_api")}
    expect(all(x.ip for x in pods.values()), "Some lab pods have no IP yet: wait until they are Running "
           f"(kubectl get pods -n {p['namespace']} -o wide).")
    port = int(p["db_port"])
    # Only between our own pods: the ipBlock addresses belong to somebody else.
    probes = [("api", "db", port, True), ("web", "db", port, False), ("other_api", "db", port, False),
              ("db", "web", 80, False)]
    with ThreadPoolExecutor(len(probes)) as pool:
        results = list(pool.map(lambda t: _connect(str(enforcing.kubeconfig), pods[t[0]], pods[t[1]].ip, t[2]),
                                probes))
    wrong = []
    for (src, dst, prt, want), got in zip(probes, results):
        if got not in ("connected", "blocked"):
            wrong.append(f"- {pods[src].key} -> {pods[dst].key} TCP/{prt}: the probe failed ({got})")
        elif (got == "connected") != want:
            wrong.append(f"- {pods[src].key} -> {pods[dst].key} TCP/{prt}: expected "
                         f"{'a connection' if want else 'no connection'}, got {got}")
    expect(not wrong, "Real connections disagree with the task (the CNI may need a few seconds after a change):\n"
           + "\n".join(wrong))
