"""NetworkPolicy semantics (networking.k8s.io/v1) in plain Python, with explanations.

Graders cannot watch packets on the local backend (kwok pods do not run), so they ask this
module instead: given the policies, pods and namespaces read from the API (plain dicts, as
`Kube.list` or YAML gives them) and one connection, is it allowed, and which policy, rule and
peer decided it? And, for a grader that must not be fooled by a sample, what does the policy set
allow as a whole: `pod_grants` and `address_grants` give, rule by rule, the exact ports
(PortSet: protocols and port ranges, named ports resolved) toward a pod or a set of addresses
(AddressSet, from ipBlocks), to compare with what a task allows. The rules implemented, as the
Kubernetes API reference and the "Network Policies" concept page define them:

* A pod is isolated for ingress (egress) only when some policy in its namespace selects it
  and lists that policy type. A non-isolated direction allows everything.
* policyTypes, when omitted, defaults to Ingress, plus Egress if the policy has egress rules
  (the API server stores the defaulted list; YAML read from a file may lack it).
* Policies are additive: an isolated direction allows what ANY selecting policy's rules allow.
  A connection between two pods needs egress allowed at the source AND ingress at the target.
* A rule matches when one of its peers matches (missing or empty from/to = every peer) and one
  of its ports matches (missing or empty ports = every port). `ingress: []` allows nothing.
* Peers: podSelector alone = pods in the POLICY's namespace; namespaceSelector alone = every pod
  in the matching namespaces; both in one peer = AND; separate peers = OR; ipBlock = addresses
  in `cidr` but not in any `except`.
* Ports: protocol defaults to TCP; `port` is a number (with optional `endPort`, inclusive) or a
  container-port name resolved on the destination pod; a port entry without `port` matches
  every port of its protocol.
* Label selectors: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist), ANDed;
  an empty selector selects everything. Every namespace carries the immutable label
  kubernetes.io/metadata.name=<name> (the API server adds it), so we add it when missing.

Documented choices where Kubernetes leaves behaviour to the network plugin:
* ipBlock and pod IPs: the docs say ipBlock is meant for cluster-external addresses, and whether
  a pod's own IP matches an ipBlock is implementation-defined (Calico and kindnet match it,
  Cilium by default does not). `Network(ipblock_matches_pods=True)` matches pod IPs literally;
  pass False to model plugins that ignore them. Explanations say when a pod matched by IP.
* hostNetwork pods share the node's address and cannot be isolated reliably: we never treat
  them as isolated (their traffic looks like node traffic to the plugin).
* Traffic between a pod and its own node is always allowed by Kubernetes; this module models
  pods and IPs, not nodes, so callers should not ask about node traffic.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Iterable, Union

PROTOCOLS = ("TCP", "UDP", "SCTP")
NAME_LABEL = "kubernetes.io/metadata.name"
INGRESS, EGRESS = "Ingress", "Egress"

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


# --- the objects --------------------------------------------------------------------------------

@dataclass(frozen=True)
class ContainerPort:
    port: int
    name: str | None = None
    protocol: str = "TCP"


@dataclass
class Pod:
    namespace: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    ip: str | None = None
    ports: tuple[ContainerPort, ...] = ()
    host_network: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_dict(cls, obj: dict) -> "Pod":
        """From a Pod as the API returns it (metadata, spec.containers[].ports, status.podIP)."""
        md, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        ports = tuple(ContainerPort(int(p["containerPort"]), p.get("name"), p.get("protocol") or "TCP")
                      for c in spec.get("containers") or [] for p in c.get("ports") or [])
        return cls(md.get("namespace") or "default", md["name"], dict(md.get("labels") or {}),
                   status.get("podIP"), ports, bool(spec.get("hostNetwork")))


@dataclass
class Namespace:
    name: str
    labels: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        self.labels = {NAME_LABEL: self.name, **(self.labels or {})}

    @classmethod
    def from_dict(cls, obj: dict) -> "Namespace":
        md = obj.get("metadata") or {}
        return cls(md["name"], dict(md.get("labels") or {}))


@dataclass
class Policy:
    namespace: str
    name: str
    spec: dict

    @classmethod
    def from_dict(cls, obj: dict) -> "Policy":
        md = obj.get("metadata") or {}
        return cls(md.get("namespace") or "default", md["name"], obj.get("spec") or {})

    @property
    def policy_types(self) -> tuple[str, ...]:
        """The types this policy isolates for, with the API server's defaulting applied."""
        declared = self.spec.get("policyTypes")
        if declared:
            return tuple(declared)
        return (INGRESS, EGRESS) if self.spec.get("egress") else (INGRESS,)

    def rules(self, direction: str) -> list[dict]:
        """This policy's rules for a direction, or [] when it does not isolate that way
        (egress rules of a policy whose policyTypes lacks Egress are ignored)."""
        if direction not in self.policy_types:
            return []
        return list(self.spec.get("ingress" if direction == INGRESS else "egress") or [])

    def selects(self, pod: Pod) -> bool:
        return pod.namespace == self.namespace and selector_matches(self.spec.get("podSelector") or {}, pod.labels)


# --- label selectors ------------------------------------------------------------------------------

def selector_matches(selector: dict, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector against a label set: matchLabels and every expression must hold."""
    labels = labels or {}
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for e in selector.get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), list(e.get("values") or [])
        if op == "In":
            ok = key in labels and labels[key] in values
        elif op == "NotIn":
            ok = key not in labels or labels[key] not in values
        elif op == "Exists":
            ok = key in labels
        elif op == "DoesNotExist":
            ok = key not in labels
        else:
            raise ValueError(f"unknown label selector operator {op!r} (In, NotIn, Exists, DoesNotExist)")
        if not ok:
            return False
    return True


def describe_selector(selector: dict) -> str:
    """kubectl-style text: 'role=db,tier in (a,b)'; '' for the empty (select-all) selector."""
    parts = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for e in selector.get("matchExpressions") or []:
        op, key, vals = e.get("operator"), e.get("key"), ",".join(e.get("values") or [])
        parts.append({"In": f"{key} in ({vals})", "NotIn": f"{key} notin ({vals})",
                      "Exists": key, "DoesNotExist": f"!{key}"}.get(op, f"{key} {op} ({vals})"))
    return ",".join(parts)


def describe_peer(peer: dict, policy_ns: str) -> str:
    if "ipBlock" in peer and peer["ipBlock"] is not None:
        ib = peer["ipBlock"]
        exc = ib.get("except") or []
        return f"ipBlock {ib.get('cidr')}" + (f" except {', '.join(exc)}" if exc else "")
    ps, ns = peer.get("podSelector"), peer.get("namespaceSelector")
    pods = f"pods {describe_selector(ps)}" if ps and describe_selector(ps) else "all pods"
    if ns is None:
        return f"{pods} in namespace {policy_ns}" if ps is not None else "an empty peer (invalid)"
    return f"{pods} in " + (f"namespaces {describe_selector(ns)}" if describe_selector(ns) else "all namespaces")


def describe_port(entry: dict) -> str:
    proto = entry.get("protocol") or "TCP"
    p = entry.get("port")
    if p is None:
        return f"{proto} (any port)"
    end = entry.get("endPort")
    return f"{proto}/{p}-{end}" if end is not None and not isinstance(p, str) else f"{proto}/{p}"


# --- verdicts -------------------------------------------------------------------------------------

@dataclass
class Match:
    """Why a rule let a connection through: the policy, the 1-based rule and peer numbers."""
    policy: Policy
    direction: str
    rule: int
    peer: int | None  # None when the rule has no from/to (every peer)
    peer_text: str
    port_text: str
    by_pod_ip: bool = False  # an ipBlock matched a pod's own IP (implementation-defined)

    def __str__(self) -> str:
        word = "ingress" if self.direction == INGRESS else "egress"
        peer = f"peer {self.peer}: {self.peer_text}" if self.peer else self.peer_text
        note = " (an ipBlock matching a pod IP: not every network plugin does this)" if self.by_pod_ip else ""
        return f"{self.policy.name} {word} rule {self.rule} ({peer}; port {self.port_text}){note}"


@dataclass
class Side:
    """One direction of a connection: egress at the source or ingress at the destination."""
    direction: str
    pod: Pod | None  # the pod whose policies apply; None when this end is outside the cluster
    endpoint: str  # text for the end
    isolating: list[Policy] = field(default_factory=list)
    matches: list[Match] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)  # why each rule did not match

    @property
    def allowed(self) -> bool:
        return self.pod is None or not self.isolating or bool(self.matches)

    def explain(self) -> str:
        what = f"{'egress from' if self.direction == EGRESS else 'ingress to'} {self.endpoint}"
        if self.pod is None:
            return f"{what}: not a pod, so no NetworkPolicy applies"
        if not self.isolating:
            return (f"{what}: allowed, the pod is not isolated for {self.direction} (no NetworkPolicy in "
                    f"'{self.pod.namespace}' selects it with policyType {self.direction})")
        names = ", ".join(p.name for p in self.isolating)
        if self.matches:
            return f"{what}: isolated by {names}; allowed by {self.matches[0]}"
        why = "; ".join(self.misses) or f"{names} has no {self.direction.lower()} rules, so it allows nothing"
        return f"{what}: isolated by {names}; no rule allows it: {why}"


@dataclass
class Verdict:
    src: str
    dst: str
    protocol: str
    port: int
    egress: Side
    ingress: Side

    @property
    def allowed(self) -> bool:
        return self.egress.allowed and self.ingress.allowed

    @property
    def connection(self) -> str:
        return f"{self.src} -> {self.dst} {self.protocol}/{self.port}"

    def explain(self) -> str:
        """One paragraph: the verdict, then what decided each side (the deciding side first)."""
        sides = [self.egress, self.ingress]
        if not self.allowed:
            sides.sort(key=lambda s: s.allowed)
        return (f"{self.connection} is {'allowed' if self.allowed else 'denied'}: "
                + "; ".join(s.explain() for s in sides))

    def __bool__(self) -> bool:
        return self.allowed


# --- the engine -----------------------------------------------------------------------------------

class Network:
    """A snapshot of pods, namespaces and policies that answers "may A talk to B on port P?"."""

    def __init__(self, policies: Iterable = (), pods: Iterable = (), namespaces: Iterable = (),
                 ipblock_matches_pods: bool = True):
        self.policies = [p if isinstance(p, Policy) else Policy.from_dict(p) for p in policies]
        self.pods = [p if isinstance(p, Pod) else Pod.from_dict(p) for p in pods]
        self.namespaces = {n.name: n for n in
                           (n if isinstance(n, Namespace) else Namespace.from_dict(n) for n in namespaces)}
        self.ipblock_matches_pods = ipblock_matches_pods

    # endpoints
    def pod(self, ref: str) -> Pod:
        ns, _, name = ref.rpartition("/")
        for p in self.pods:
            if p.name == name and p.namespace == (ns or "default"):
                return p
        raise KeyError(f"no pod {ref!r} in this network")

    def endpoint(self, ref) -> Pod | Address:
        """A Pod, 'namespace/name', or an IP address (a pod's IP means that pod)."""
        if isinstance(ref, Pod):
            return ref
        if isinstance(ref, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
            addr = ref
        else:
            try:
                addr = ipaddress.ip_address(str(ref))
            except ValueError:
                return self.pod(str(ref))
        for p in self.pods:
            if p.ip and not p.host_network and ipaddress.ip_address(p.ip) == addr:
                return p
        return addr

    def namespace_labels(self, name: str) -> dict[str, str]:
        ns = self.namespaces.get(name)
        return ns.labels if ns else {NAME_LABEL: name}

    def isolating(self, pod: Pod, direction: str) -> list[Policy]:
        """The policies that isolate `pod` for `direction` (select it and list that type)."""
        if pod.host_network:
            return []
        return [p for p in self.policies if p.selects(pod) and direction in p.policy_types]

    # matching
    def peer_matches(self, policy: Policy, peer: dict, ep: Pod | Address) -> tuple[bool, bool]:
        """(matches, matched a pod by its IP through an ipBlock)."""
        block = peer.get("ipBlock")
        ps, ns = peer.get("podSelector"), peer.get("namespaceSelector")
        if block is not None:
            if ps is not None or ns is not None:
                return False, False  # the API rejects ipBlock combined with selectors
            if isinstance(ep, Pod):
                if not (ep.ip and self.ipblock_matches_pods):
                    return False, False
                addr = ipaddress.ip_address(ep.ip)
            else:
                addr = ep
            inside = _in(addr, block.get("cidr")) and not any(_in(addr, e) for e in block.get("except") or [])
            return inside, inside and isinstance(ep, Pod)
        if not isinstance(ep, Pod) or (ps is None and ns is None):
            return False, False
        if ns is None:
            in_ns = ep.namespace == policy.namespace
        else:
            in_ns = selector_matches(ns, self.namespace_labels(ep.namespace))
        return in_ns and (ps is None or selector_matches(ps, ep.labels)), False

    @staticmethod
    def port_matches(entry: dict, protocol: str, port: int, dst: Pod | Address) -> bool:
        if (entry.get("protocol") or "TCP") != protocol:
            return False
        want = entry.get("port")
        if want is None:
            return True
        if isinstance(want, str):  # a named port: only a destination pod can resolve it
            return isinstance(dst, Pod) and any(
                cp.name == want and cp.protocol == protocol and cp.port == port for cp in dst.ports)
        end = entry.get("endPort")
        return int(want) <= port <= int(end if end is not None else want)

    def _side(self, direction: str, pod_end, other_end, dst, protocol: str, port: int, texts) -> Side:
        """Evaluate `direction` at `pod_end` (the source for egress, destination for ingress)."""
        pod_text, other_text = texts
        if not isinstance(pod_end, Pod):
            return Side(direction, None, pod_text)
        side = Side(direction, pod_end, pod_text, self.isolating(pod_end, direction))
        key = "from" if direction == INGRESS else "to"
        word = "ingress" if direction == INGRESS else "egress"
        for pol in side.isolating:
            for i, rule in enumerate(pol.rules(direction), 1):
                peers = rule.get(key) or []
                ports = rule.get("ports") or []
                peer_hit: tuple[int | None, str, bool] | None = None
                if not peers:
                    peer_hit = (None, f"every {'source' if direction == INGRESS else 'destination'}", False)
                for j, peer in enumerate(peers, 1):
                    ok, by_ip = self.peer_matches(pol, peer, other_end)
                    if ok:
                        peer_hit = (j, describe_peer(peer, pol.namespace), by_ip)
                        break
                port_hit = "any" if not ports else next(
                    (describe_port(e) for e in ports if self.port_matches(e, protocol, port, dst)), None)
                where = f"{pol.name} {word} rule {i}"
                if peer_hit is None:
                    listed = "; ".join(describe_peer(p, pol.namespace) for p in peers)
                    side.misses.append(f"{where}: {other_text} matches none of its peers ({listed})")
                elif port_hit is None:
                    listed = ", ".join(describe_port(e) for e in ports)
                    side.misses.append(f"{where}: port {protocol}/{port} is not among its ports ({listed})")
                else:
                    side.matches.append(Match(pol, direction, i, peer_hit[0], peer_hit[1], port_hit, peer_hit[2]))
        return side

    def check(self, src, dst, port: int, protocol: str = "TCP") -> Verdict:
        """May `src` open a connection to `dst` on `protocol`/`port`? Ends are Pods,
        'namespace/name' strings or IP addresses."""
        protocol = protocol.upper()
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol {protocol!r}: NetworkPolicy knows {', '.join(PROTOCOLS)}")
        s, d = self.endpoint(src), self.endpoint(dst)
        texts = (_text(s), _text(d))
        egress = self._side(EGRESS, s, d, d, protocol, port, texts)
        ingress = self._side(INGRESS, d, s, d, protocol, port, texts[::-1])
        return Verdict(texts[0], texts[1], protocol, port, egress, ingress)


def _in(addr: Address, cidr: str | None) -> bool:
    try:
        return cidr is not None and addr in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


def _text(ep: Pod | Address) -> str:
    return ep.key if isinstance(ep, Pod) else str(ep)


# --- symbolic sets: everything a policy set allows, not one connection at a time -------------------
#
# Sampling a few connections cannot tell "TCP 3306" from "TCP 3306-3400" or "TCP 3306 and UDP 3306".
# The types below describe the allowed traffic exactly: port sets per protocol as integer ranges,
# address sets per IP family as integer ranges, and one Grant per (policy, rule, peer) that says
# what that rule lets through. Callers compare the union of grants with what a task allows.

@dataclass(frozen=True)
class Ranges:
    """A set of integers as sorted, disjoint, non-touching inclusive spans."""
    spans: tuple[tuple[int, int], ...] = ()

    @classmethod
    def of(cls, *spans: tuple[int, int]) -> "Ranges":
        merged: list[list[int]] = []
        for lo, hi in sorted((int(a), int(b)) for a, b in spans if a <= b):
            if merged and lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        return cls(tuple((a, b) for a, b in merged))

    def __or__(self, other: "Ranges") -> "Ranges":
        return Ranges.of(*self.spans, *other.spans)

    def __and__(self, other: "Ranges") -> "Ranges":
        return Ranges.of(*((max(a, c), min(b, d)) for a, b in self.spans for c, d in other.spans
                           if max(a, c) <= min(b, d)))

    def __sub__(self, other: "Ranges") -> "Ranges":
        out = []
        for a, b in self.spans:
            lo = a
            for c, d in other.spans:
                if d < lo or c > b:
                    continue
                if c > lo:
                    out.append((lo, c - 1))
                lo = max(lo, d + 1)
            if lo <= b:
                out.append((lo, b))
        return Ranges.of(*out)

    def __bool__(self) -> bool:
        return bool(self.spans)

    def __contains__(self, n: int) -> bool:
        return any(a <= n <= b for a, b in self.spans)

    def __str__(self) -> str:
        return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in self.spans)


ALL_PORTS = Ranges.of((1, 65535))


class _RangeSets:
    """Ranges under a few fixed keys (protocols, IP families), with the set operations applied
    key by key. Empty entries are dropped, so equal sets compare equal."""
    KEYS: tuple = ()

    def __init__(self, parts: dict | None = None):
        self.parts = {k: r for k, r in (parts or {}).items() if r}

    def get(self, key) -> Ranges:
        return self.parts.get(key, Ranges())

    def _zip(self, other, op):
        return type(self)({k: op(self.get(k), other.get(k)) for k in self.KEYS})

    def __or__(self, other):
        return self._zip(other, Ranges.__or__)

    def __and__(self, other):
        return self._zip(other, Ranges.__and__)

    def __sub__(self, other):
        return self._zip(other, Ranges.__sub__)

    def __bool__(self) -> bool:
        return bool(self.parts)

    def __eq__(self, other) -> bool:
        return type(other) is type(self) and self.parts == other.parts

    def __repr__(self) -> str:
        return str(self)


class PortSet(_RangeSets):
    """Ports per protocol ('TCP' -> Ranges). Printed as 'TCP 22, 3307-3400; UDP 3306'."""
    KEYS = PROTOCOLS

    @classmethod
    def everything(cls) -> "PortSet":
        return cls({p: ALL_PORTS for p in PROTOCOLS})

    @classmethod
    def single(cls, protocol: str, port: int, end: int | None = None) -> "PortSet":
        return cls({protocol: Ranges.of((port, port if end is None else end))})

    def __contains__(self, item: tuple[str, int]) -> bool:
        protocol, port = item
        return port in self.get(protocol)

    def __str__(self) -> str:
        if self == PortSet.everything():
            return "every port of every protocol"
        return "; ".join(f"{p} {'(every port)' if self.get(p) == ALL_PORTS else self.get(p)}"
                         for p in PROTOCOLS if self.get(p)) or "no port"


_FAMILY = {4: (ipaddress.IPv4Address, 2 ** 32 - 1), 6: (ipaddress.IPv6Address, 2 ** 128 - 1)}


class AddressSet(_RangeSets):
    """IP addresses per family (4, 6) as integer Ranges; printed as CIDRs when that is short."""
    KEYS = tuple(_FAMILY)

    @classmethod
    def everything(cls) -> "AddressSet":
        return cls({f: Ranges.of((0, top)) for f, (_, top) in _FAMILY.items()})

    @classmethod
    def cidr(cls, cidr: str) -> "AddressSet":
        """The addresses of one CIDR; an unparsable one is the empty set (the API rejects it)."""
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except (TypeError, ValueError):
            return cls()
        return cls({net.version: Ranges.of((int(net.network_address), int(net.broadcast_address)))})

    @classmethod
    def block(cls, ipblock: dict) -> "AddressSet":
        """An ipBlock: its cidr minus every except."""
        out = cls.cidr(ipblock.get("cidr"))
        for e in ipblock.get("except") or []:
            out = out - cls.cidr(e)
        return out

    def __contains__(self, ip: str) -> bool:
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            return False
        return int(addr) in self.get(addr.version)

    def _spans(self):
        for family, ranges in sorted(self.parts.items()):
            for a, b in ranges.spans:
                yield _FAMILY[family][0](a), _FAMILY[family][0](b)

    def cidrs(self) -> list[str]:
        return [str(n) for a, b in self._spans() for n in ipaddress.summarize_address_range(a, b)]

    def __str__(self) -> str:
        cidrs = self.cidrs()
        if len(cidrs) <= 3:
            return ", ".join(cidrs) or "no address"
        return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in self._spans())


@dataclass
class Grant:
    """What one rule lets through for one peer (a pod) or for a set of addresses.

    `policy` is None when the pod is not isolated for the direction at all (everything passes).
    `peer` is the 1-based peer of the rule that matched, None for a rule without from/to."""
    policy: Policy | None
    direction: str
    rule: int
    peer: int | None
    ports: PortSet
    addresses: AddressSet | None = None  # address grants only
    by_ip: bool = False  # a pod grant that came from an ipBlock containing the pod's IP

    def rule_dict(self) -> dict:
        return self.policy.rules(self.direction)[self.rule - 1] if self.policy else {}

    def peer_dict(self) -> dict:
        peers = self.rule_dict().get("from" if self.direction == INGRESS else "to") or []
        return peers[self.peer - 1] if self.peer else {}

    def where(self) -> str:
        word = "ingress" if self.direction == INGRESS else "egress"
        return f"{self.policy.name} {word} rule {self.rule}" if self.policy else f"(not isolated for {word})"


def union_ports(grants: Iterable[Grant]) -> PortSet:
    out = PortSet()
    for g in grants:
        out = out | g.ports
    return out


def coverage(grants: Iterable[Grant], within: AddressSet) -> list[tuple[AddressSet, PortSet]]:
    """Split `within` into pieces that the address grants allow the same ports to, and say which
    ports each piece gets (pieces no grant covers get an empty PortSet)."""
    grants = [g for g in grants if g.addresses is not None]
    out: list[tuple[AddressSet, PortSet]] = []
    for family, ranges in within.parts.items():
        cuts = {a for a, _ in ranges.spans} | {b + 1 for _, b in ranges.spans}
        for g in grants:
            for a, b in g.addresses.get(family).spans:
                cuts |= {a, b + 1}
        edges = sorted(cuts)
        for lo, nxt in zip(edges, edges[1:]):
            piece = AddressSet({family: Ranges.of((lo, nxt - 1))}) & within
            if not piece:
                continue
            ports = union_ports(g for g in grants if lo in g.addresses.get(family))
            if out and out[-1][1] == ports and family in out[-1][0].parts:
                out[-1] = (out[-1][0] | piece, ports)
            else:
                out.append((piece, ports))
    return out


def rule_ports(rule: dict, dst: Pod | None) -> PortSet:
    """The ports a rule allows toward `dst` (the destination pod; None for an address). Named
    ports resolve against the destination pod's container ports, so toward an address they are
    nothing."""
    entries = rule.get("ports") or []
    if not entries:
        return PortSet.everything()
    out = PortSet()
    for e in entries:
        proto = e.get("protocol") or "TCP"
        want = e.get("port")
        if want is None:
            out = out | PortSet({proto: ALL_PORTS})
        elif isinstance(want, str):
            for cp in (dst.ports if dst else ()):
                if cp.name == want and cp.protocol == proto:
                    out = out | PortSet.single(proto, cp.port)
        else:
            end = e.get("endPort")
            out = out | PortSet.single(proto, int(want), int(end) if end is not None else None)
    return out


def _grants(net: "Network", pod: Pod, direction: str, peer_test) -> list[Grant]:
    """One Grant per rule of every policy isolating `pod` for `direction` whose peers pass
    `peer_test(policy, peer) -> (matched, by_ip, addresses, dst)`; a rule without peers grants to all."""
    policies = net.isolating(pod, direction)
    if not policies:
        return [Grant(None, direction, 0, None, PortSet.everything(), AddressSet.everything())]
    out = []
    key = "from" if direction == INGRESS else "to"
    for pol in policies:
        for i, rule in enumerate(pol.rules(direction), 1):
            peers = rule.get(key) or []
            if not peers:
                ok, by_ip, addrs, dst = peer_test(pol, None)
                out.append(Grant(pol, direction, i, None, rule_ports(rule, dst), addrs))
                continue
            for j, peer in enumerate(peers, 1):
                ok, by_ip, addrs, dst = peer_test(pol, peer)
                if ok:
                    out.append(Grant(pol, direction, i, j, rule_ports(rule, dst), addrs, by_ip))
    return out


def pod_grants(net: "Network", pod: Pod, direction: str, other: Pod) -> list[Grant]:
    """What `pod`'s policies allow between it and pod `other` (the source for ingress, the
    destination for egress), rule by rule. `other` may be a pod that does not exist (yet): with
    ip None it is matched by its labels and namespace only."""
    dst = pod if direction == INGRESS else other

    def test(pol, peer):
        if peer is None:
            return True, False, None, dst
        ok, by_ip = net.peer_matches(pol, peer, other)
        return ok, by_ip, None, dst
    return _grants(net, pod, direction, test)


def address_grants(net: "Network", pod: Pod, direction: str) -> list[Grant]:
    """What `pod`'s policies allow between it and IP addresses: one Grant per ipBlock peer (and
    per rule without peers, for every address), each with its AddressSet."""
    dst = pod if direction == INGRESS else None

    def test(pol, peer):
        if peer is None:
            return True, False, AddressSet.everything(), dst
        block = peer.get("ipBlock")
        if block is None or peer.get("podSelector") is not None or peer.get("namespaceSelector") is not None:
            return False, False, None, dst
        return True, False, AddressSet.block(block), dst
    return [g for g in _grants(net, pod, direction, test) if g.addresses]
