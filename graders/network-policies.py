"""Grader for network-policies: only the namespace's API pods reach db, on its port, and db reaches
only one address on one port.

Pods on the local backend do not carry traffic, so the verdicts come from ckalab.netpol applied
to the LIVE pods, namespaces and every NetworkPolicy in the cluster (another policy in the
namespace can open what db-policy closes, because policies add up). Where pods carry traffic and
the CNI enforces policies (kind; real local nodes, where kube-router does), one more check sends
real connections between the lab's own pods.

The policy set is judged by what it allows as a whole, not by sampling a few ports: for each
peer the task has an opinion about (the live pods, and pods that could be created: a recreated
api pod, an unlabelled pod, pods in a namespace that does not exist yet) and for IP addresses,
the allowed ports are computed exactly (protocols, port ranges, named ports resolved on the
destination) and compared with what the task allows. Each extra opening and each missing one
is one line of the message.

Correct-but-different forms accepted: the named port instead of the number; matchExpressions
instead of matchLabels; a peer that ANDs podSelector with a namespaceSelector naming only this
namespace; and the rules split over db-policy plus other policies. The task names db-policy, so
it must exist and select db, but what the learner is asked to achieve is the effective traffic,
and Kubernetes ORs policies: splitting ingress and egress is a common, correct style.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ckalab.grading import CheckFailed, check, expect, fail, fixture, skip
from ckalab.waiting import WaitTimeout, wait_for
from ckalab.netpol import (EGRESS, INGRESS, AddressSet, Network, Pod, Policy, PortSet, address_grants, coverage,
                           describe_peer, describe_selector, pod_grants, union_ports)

LOOK = "kubectl describe networkpolicy -n {ns}"
ROLES = ("web", "api", "db", "other_api")
# A namespace that does not exist: it stands for every namespace the task does not name.
ELSEWHERE = "any-other-namespace"
# Seconds the CNI may take to enforce a policy just stored: kube-router resyncs its iptables and
# ipsets on every pod or policy change, and with three clusters on two busy cores one policy was
# still not enforced 10 s after it was stored. Only a disagreeing look waits; one that agrees is final.
SETTLE = 30


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


@fixture(scope="session")
def world(kube, lab) -> World:
    p = lab.params
    # Plain dicts through the dynamic client: the typed API classes cost a cold check ~0.5 s.
    pods = [x for ns in (p["namespace"], p["other_namespace"]) for x in kube.list("v1", "Pod", ns)]
    namespaces = kube.list("v1", "Namespace")
    policies = kube.list("networking.k8s.io/v1", "NetworkPolicy")
    ns, other = p["namespace"], p["other_namespace"]
    names = {"web": f"{ns}/{p['web_pod']}", "api": f"{ns}/{p['api_pod']}", "db": f"{ns}/{p['db_pod']}",
             "other_api": f"{other}/{p['api_pod']}"}
    return World(Network(policies, pods, namespaces), names)


def _policy(world: World, lab) -> Policy | None:
    p = lab.params
    return next((x for x in world.net.policies if x.name == p["policy"] and x.namespace == p["namespace"]), None)


def _need_pods(world: World, lab) -> None:
    missing = [world.names[r] for r in ROLES if world.pod(r) is None]
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
             f"A policy only selects pods of its own namespace (kubectl get networkpolicy -A).")
    fail(f"NetworkPolicy '{p['policy']}' not found in namespace '{p['namespace']}' "
         f"(kubectl get networkpolicy -n {p['namespace']}).")


@check(2, "the policies select the db pod, and leave the other pods alone", after="test_policy_exists",
       hint="kubectl get pods -n NAMESPACE --show-labels")
def test_policy_selects_db(world, lab):
    p = lab.params
    _need_pods(world, lab)
    pol, db = _policy(world, lab), world.pod("db")
    sel = pol.spec.get("podSelector") or {}
    expect(pol.selects(db), f"NetworkPolicy '{p['policy']}' has podSelector {_sel_text(sel)}, which does not select "
           f"pod '{p['db_pod']}' (labels {describe_selector({'matchLabels': db.labels})}). "
           f"Look: kubectl get pods -n {p['namespace']} --show-labels")
    # "Leave the other pods' traffic as it is": no policy may isolate them, db-policy or another.
    others = [world.pod(r) for r in ("web", "api", "other_api")]
    wrong = []
    for x in sorted(world.net.policies, key=lambda x: (x is not pol, x.namespace, x.name)):
        hit = [o.name if o.namespace == p["namespace"] else o.key for o in others if x.selects(o)]
        if hit:
            wrong.append(f"NetworkPolicy '{x.name}' in '{x.namespace}' has podSelector "
                         f"{_sel_text(x.spec.get('podSelector') or {})}, which also selects {', '.join(hit)}: it "
                         f"isolates them for {' and '.join(x.policy_types)} too, and the task leaves their traffic "
                         f"as it is.")
    expect(not wrong, "\n".join([*wrong, f"Look: kubectl get pods -n {p['namespace']} --show-labels"]))


@check(2, "db is isolated for both Ingress and Egress", after="test_policy_selects_db",
       hint="kubectl get networkpolicy -n NAMESPACE -o yaml shows each policy's policyTypes")
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
                 f"{key}. Look: kubectl get networkpolicy {p['policy']} -n {p['namespace']} -o yaml")
        fail(f"No NetworkPolicy isolates pod '{p['db_pod']}' for {direction} ({p['policy']} has policyTypes "
             f"{types}), so its {key} is not restricted at all. Look: {LOOK.format(ns=p['namespace'])}")


# --- behaviour: everything the policy set allows, compared with what the task allows -----------------

@dataclass
class Peer:
    """A pod the task has an opinion about: one that exists, or one that could be created."""
    pod: Pod
    text: str  # how a message names it
    group: str  # how a message names the group, when every member of it is concerned
    want: PortSet  # what the task allows between db and this pod


@dataclass
class Findings:
    extra: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)  # (policy, ports, to/from) -> whom
    missing: dict[str, list[str]] = field(default_factory=dict)  # ports -> whom
    notes: list[str] = field(default_factory=list)

    def add_extra(self, policy: str, ports: PortSet, who: str, text: str) -> None:
        self.extra.setdefault((policy, str(ports), who), []).append(text)

    def __bool__(self) -> bool:
        return bool(self.extra or self.missing)


def _peers(world: World, lab, direction: str) -> list[Peer]:
    p = lab.params
    ns = p["namespace"]
    role = f"role={p['api_role']}"
    none = PortSet()
    live = {r: world.pod(r) for r in ROLES}
    if direction == INGRESS:
        want = PortSet.single("TCP", int(p["db_port"]))
        mates, strangers = f"pods with {role} in {ns}", f"pods with {role} in other namespaces"
        return [
            Peer(live["api"], f"pod {live['api'].key}", mates, want),
            Peer(Pod(ns, "new", {"role": p["api_role"]}), f"a new pod with {role} in {ns} (the "
                 f"{p['api_pod']} pod once it is recreated, say)", mates, want),
            Peer(live["web"], f"pod {live['web'].key}", f"the other pods in {ns}", none),
            Peer(live["db"], f"pod {live['db'].key} itself", f"the other pods in {ns}", none),
            Peer(Pod(ns, "new"), f"a pod without labels in {ns}", f"the other pods in {ns}", none),
            Peer(live["other_api"], f"pod {live['other_api'].key}", strangers, none),
            Peer(Pod(ELSEWHERE, "new", {"role": p["api_role"]}), f"a pod with {role} in any other namespace",
                 strangers, none),
            Peer(Pod(ELSEWHERE, "plain"), "a pod without labels in any other namespace",
                 "pods without labels in other namespaces", none),
        ]
    local, remote = f"pods in {ns}", "pods in other namespaces"
    return [Peer(live[r], f"pod {live[r].key}", local, none) for r in ("web", "api", "db")] + [
        Peer(Pod(ns, "new"), f"a new pod in {ns}", local, none),
        Peer(live["other_api"], f"pod {live['other_api'].key}", remote, none),
        Peer(Pod(ELSEWHERE, "new"), "a pod in any other namespace", remote, none),
    ]


def _whom(texts: list[str], peers: list[Peer]) -> str:
    """'pods with role=api-pod in app' when a whole group is named, else the single peers."""
    known = {x.text for x in peers}
    if set(texts) == known:
        return "every pod in every namespace"
    out: list[str] = []
    for x in peers:
        members = [y.text for y in peers if y.group == x.group]
        name = x.group if set(members) <= set(texts) else x.text if x.text in texts else None
        if name and name not in out:
            out.append(name)
    return ", ".join(out + [t for t in texts if t not in known])


def _analyse(world: World, lab, direction: str) -> Findings:
    p = lab.params
    ns = p["namespace"]
    db = world.pod("db")
    f = Findings()
    peers = _peers(world, lab, direction)
    want_ports = (PortSet.single("TCP", int(p["db_port"])) if direction == INGRESS
                  else PortSet.single("TCP", int(p["egress_port"])))
    want_addrs = AddressSet() if direction == INGRESS else AddressSet.cidr(p["egress_cidr"])
    to = "from" if direction == INGRESS else "to"
    noted: list = []  # (grant, why) whose rule explains an extra opening

    # Rules without peers match every pod and every address: one line each, not one per peer.
    for g in address_grants(world.net, db, direction):
        if g.peer is None and g.policy is not None:
            f.add_extra(g.policy.name, g.ports, to, "every source (every pod and every address)"
                        if direction == INGRESS else "every destination (every pod and every address)")
            noted.append((g, "no-peers"))

    for x in peers:
        grants = pod_grants(world.net, db, direction, x.pod)
        for g in grants:
            if g.policy is None or g.peer is None or g.by_ip:
                continue  # not isolated (checked before), every peer (above), ipBlock (below)
            extra = g.ports - x.want
            if extra:
                f.add_extra(g.policy.name, extra, to, x.text)
                noted.append((g, x))
        missing = x.want - union_ports(grants)
        if missing:
            f.missing.setdefault(str(missing), []).append(x.text)

    others = [world.pod(r) for r in ROLES]
    for g in address_grants(world.net, db, direction):
        if g.peer is None:
            continue
        block = describe_peer(g.peer_dict(), ns)
        outside = g.addresses - want_addrs
        if outside and g.ports:
            where = block if outside == g.addresses else f"{block}, beyond {p['egress_cidr']}"
            inside = [o.key for o in others if o.ip and o.ip in outside]
            if inside:
                where += (f" (it holds the IPs of pods {', '.join(inside)})" if len(inside) > 1
                          else f" (it holds the IP of pod {inside[0]})")
            f.add_extra(g.policy.name, g.ports, to, where)
            noted.append((g, "address"))
        extra = g.ports - want_ports
        if (g.addresses & want_addrs) and extra:
            f.add_extra(g.policy.name, extra, to, str(g.addresses & want_addrs))
            noted.append((g, "address"))
    if want_addrs:
        for piece, ports in coverage(address_grants(world.net, db, direction), want_addrs):
            if want_ports - ports:
                f.missing.setdefault(str(want_ports - ports), []).append(str(piece))

    f.notes = _notes(world, lab, direction, noted, f)
    return f


def _notes(world: World, lab, direction: str, noted: list, found: Findings) -> list[str]:
    """Name the common mistakes behind the findings, once each. They say what a rule means,
    not what to write instead."""
    p = lab.params
    ns = p["namespace"]
    db, api = world.pod("db"), world.pod("api")
    word, key = ("ingress", "from") if direction == INGRESS else ("egress", "to")
    notes: list[str] = []
    for g, why in noted:
        rule, peer = g.rule_dict(), g.peer_dict()
        if why == "no-peers":
            notes.append(f"{g.where()} has no '{key}', so it matches every "
                         f"{'source' if direction == INGRESS else 'destination'}.")
        if not rule.get("ports"):
            notes.append(f"{g.where()} has no ports, so it allows every port of every protocol.")
        if isinstance(why, Peer):
            ps, nss = peer.get("podSelector"), peer.get("namespaceSelector")
            if nss is not None and why.pod.namespace != ns and ps is not None:
                notes.append(f"The peer '{describe_peer(peer, ns)}' of {g.where()} reaches beyond '{ns}' because of "
                             f"its namespaceSelector; a podSelector on its own means pods in the policy's namespace.")
            peers = rule.get(key) or []
            if nss is not None and ps is None and any(q.get("podSelector") is not None for q in peers if q is not peer):
                notes.append(f"In {g.where()}, namespaceSelector and podSelector are two separate peers ('- ' before "
                             f"each), and peers are ORed: every pod of the selected namespaces matches.")
        if why == "address" and direction == INGRESS and api.ip and g.addresses and api.ip in g.addresses:
            notes.append(f"{g.where()} lets pod {api.key} in by its current IP ({describe_peer(peer, ns)}). Pod IPs "
                         f"change whenever a pod is recreated, so the rule follows an address, not the "
                         f"{p['api_pod']} pod: the pods the task names are the ones labelled role={p['api_role']}, "
                         f"which only a podSelector on that label keeps finding.")
    if found.missing:
        peers = _peers(world, lab, direction)
        for pol in world.net.policies:
            if not pol.selects(db):
                continue
            for other in (INGRESS, EGRESS):
                w = other.lower()
                if pol.spec.get(w) and other not in pol.policy_types:
                    notes.append(f"{pol.name} has {w} rules, but its policyTypes [{', '.join(pol.policy_types)}] "
                                 f"leaves {other} out, so they are ignored.")
            for i, rule in enumerate(pol.rules(direction), 1):
                for q in rule.get(key) or []:
                    if q.get("ipBlock") is None and not any(
                            world.net.peer_matches(pol, q, x.pod)[0] for x in peers):
                        notes.append(f"The peer '{describe_peer(q, ns)}' of {pol.name} {word} rule {i} matches none "
                                     f"of the lab's pods (kubectl get pods -A --show-labels).")
                for e in rule.get("ports") or []:
                    name, proto = e.get("port"), e.get("protocol") or "TCP"
                    if not isinstance(name, str):
                        continue
                    if direction == EGRESS and any(q.get("ipBlock") for q in rule.get("to") or []):
                        notes.append(f"{pol.name} egress rule {i} names port '{name}': a named port is looked up "
                                     f"among a destination pod's container ports, so it never matches an ipBlock "
                                     f"address.")
                    elif direction == INGRESS and not any(c.name == name and c.protocol == proto for c in db.ports):
                        have = ", ".join(f"{c.name or '(no name)'} {c.port}/{c.protocol}" for c in db.ports) or "none"
                        notes.append(f"{pol.name} ingress rule {i} names port '{name}' ({proto}), but pod "
                                     f"'{p['db_pod']}' has no {proto} container port of that name (its container "
                                     f"ports: {have}), so it matches nothing (kubectl get pod {p['db_pod']} -n {ns} "
                                     f"-o yaml).")
    return list(dict.fromkeys(notes))


def _report(world: World, lab, direction: str) -> None:
    p = lab.params
    _need_pods(world, lab)
    found = _analyse(world, lab, direction)
    if not found:
        return
    peers = _peers(world, lab, direction)
    word = "ingress" if direction == INGRESS else "egress"
    lines = [f"Connections {'into' if direction == INGRESS else 'out of'} pod '{p['db_pod']}' differ from the task:"]
    for (policy, ports, to), texts in found.extra.items():
        lines.append(f"- {policy} also allows {word} on {ports} {to} {_whom(texts, peers)}")
    for ports, texts in found.missing.items():
        to = "from" if direction == INGRESS else "to"
        lines.append(f"- no policy allows {word} on {ports} {to} {_whom(texts, peers)}")
    lines += [*found.notes, f"Look: {LOOK.format(ns=p['namespace'])}"]
    fail("\n".join(lines))


@check(4, "only the namespace's API pods reach db, on its port only", after="test_isolated",
       hint="kubectl describe networkpolicy -n NAMESPACE lists each rule's peers and ports")
def test_ingress(world, lab):
    _report(world, lab, INGRESS)


@check(4, "db reaches only the allowed address and port", after="test_isolated",
       hint="kubectl describe networkpolicy -n NAMESPACE lists each rule's peers and ports")
def test_egress(world, lab):
    _report(world, lab, EGRESS)


# --- real traffic, only where the CNI enforces policies ---------------------------------------------

@fixture
def enforcing(cluster):
    """Skip (at setup, which the grading engine does not record) unless pods carry real traffic:
    on the local backend kwok only pretends to run them, so this check is simply not part of
    the grade there instead of failing or giving free points."""
    if not cluster.offers("netpol-enforcement"):
        skip("no pod traffic on this backend")
    return cluster


def _connect(kubeconfig: str, pod, ip: str, port: int) -> str:
    """'connected', 'timeout', 'refused' or an error text, from `agnhost connect` run inside `pod`."""
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
    if "TIMEOUT" in out:
        return "timeout"
    if "REFUSED" in out:
        return "refused"
    return out.splitlines()[0] if out else f"exit {proc.returncode}"


# The probes: only between our own pods (the ipBlock addresses belong to somebody else).
def _probes(port: int) -> list[tuple[str, str, int, bool]]:
    return [("api", "db", port, True), ("web", "db", port, False), ("other_api", "db", port, False),
            ("db", "web", 80, False)]


# Not `after=`: the engine would report "Not checked yet" before the fixture could skip, which
# would add a failed check on local. The same dependency is enforced inside instead.
@check(2, "real connections between the lab's pods follow the policy",
       hint="kubectl exec -n NAMESPACE POD -- /agnhost connect IP:PORT --timeout=2s")
def test_real_traffic(enforcing, world, lab):
    p = lab.params
    _need_pods(world, lab)
    # Real traffic confirms a policy set the checks above accept; while one of them fails, its
    # message is the one to act on.
    for policy_check in (test_policy_exists, test_policy_selects_db, test_isolated, test_ingress, test_egress):
        try:
            policy_check(world, lab)
        except CheckFailed:
            fail("Not checked yet: first fix the policy checks above.")
    pods = {r: world.pod(r) for r in ROLES}
    expect(all(x.ip for x in pods.values()), "Some lab pods have no IP yet: wait until they are Running "
           f"(kubectl get pods -n {p['namespace']} -o wide).")
    probes = _probes(int(p["db_port"]))
    kubeconfig = str(enforcing.kubeconfig)
    listening: dict[tuple[str, int], bool] = {}

    def listens(role: str, prt: int) -> bool:
        """Whether the destination listens at all (from inside its own pod: loopback is never
        filtered), which tells a policy's refusal from a port nobody serves."""
        if (role, prt) not in listening:
            listening[role, prt] = _connect(kubeconfig, pods[role], "127.0.0.1", prt) == "connected"
        return listening[role, prt]

    def verdicts() -> list[str]:
        with ThreadPoolExecutor(len(probes)) as pool:
            results = list(pool.map(lambda t: _connect(kubeconfig, pods[t[0]], pods[t[1]].ip, t[2]), probes))
        wrong = []
        for (src, dst, prt, want), got in zip(probes, results):
            route = f"- {pods[src].key} -> {pods[dst].key} TCP/{prt}"
            if got == "refused" and not listens(dst, prt):
                wrong.append(f"{route}: nothing listens there (refused from inside the pod too): is "
                             f"{pods[dst].key} running as setup made it? Look: kubectl get pods -n {pods[dst].namespace}")
            elif got not in ("connected", "timeout", "refused"):
                wrong.append(f"{route}: the probe failed ({got})")
            elif (got == "connected") != want:
                seen = {"connected": "a connection", "timeout": "no answer (dropped)",
                        "refused": "a refusal (rejected by the policy)"}[got]
                wrong.append(f"{route}: expected {'a connection' if want else 'no connection'}, got {seen}")
        return wrong

    # A policy is enforced a moment after it is stored (the CNI watches for it): look again
    # for a few seconds before judging, and judge what the last look saw.
    wrong: list[str] = []

    def agrees() -> bool:
        wrong[:] = verdicts()
        return not wrong

    try:
        wait_for(agrees, SETTLE, "the CNI to enforce the policies", interval=1)
    except WaitTimeout:
        pass  # judged by the last look
    expect(not wrong, "Real connections disagree with the task:\n" + "\n".join(wrong))
