"""ckalab.netpol: NetworkPolicy semantics, one small scenario per rule of the API.

The scenarios follow the examples of the Kubernetes "Network Policies" concept page (default
deny / allow all, the test-network-policy example, AND vs OR peers, endPort, named ports) and
the API reference (policyTypes defaulting, selectors). Pure: no cluster.
"""

import pytest

from ckalab.netpol import (ALL_PORTS, AddressSet, ContainerPort, Namespace, Network, Pod, Policy, PortSet, Ranges,
                           address_grants, coverage, describe_selector, pod_grants, rule_ports, selector_matches,
                           union_ports)


def pol(name, spec, ns="default"):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


PODS = [
    Pod("default", "db", {"role": "db"}, "10.244.1.10", (ContainerPort(6379, "redis"),)),
    Pod("default", "frontend", {"role": "frontend"}, "10.244.1.11"),
    Pod("default", "other", {"role": "other"}, "10.244.1.12"),
    Pod("myproject", "worker", {"role": "worker"}, "10.244.2.10"),
    Pod("myproject", "frontend", {"role": "frontend"}, "10.244.2.11"),
    Pod("elsewhere", "frontend", {"role": "frontend"}, "10.244.3.11"),
]
NAMESPACES = [Namespace("default"), Namespace("myproject", {"project": "myproject"}), Namespace("elsewhere")]


def net(*policies, pods=PODS, **kw):
    return Network(policies, pods, NAMESPACES, **kw)


# --- no policies, default deny, allow all ----------------------------------------------------------

def test_without_policies_everything_is_allowed():
    n = net()
    assert n.check("default/frontend", "default/db", 6379)
    assert n.check("elsewhere/frontend", "default/db", 1)
    assert n.check("default/db", "8.8.8.8", 53, "UDP")


DENY_INGRESS = pol("default-deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]})
ALLOW_INGRESS = pol("allow-all-ingress", {"podSelector": {}, "ingress": [{}], "policyTypes": ["Ingress"]})
DENY_EGRESS = pol("default-deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]})
ALLOW_EGRESS = pol("allow-all-egress", {"podSelector": {}, "egress": [{}], "policyTypes": ["Egress"]})
DENY_ALL = pol("default-deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]})


def test_default_deny_ingress_blocks_incoming_in_its_namespace_only():
    n = net(DENY_INGRESS)
    assert not n.check("default/frontend", "default/db", 6379)
    assert not n.check("myproject/worker", "default/db", 6379)
    assert not n.check("203.0.113.5", "default/db", 6379)
    assert n.check("default/db", "myproject/worker", 80)  # other namespace: not selected
    assert n.check("default/db", "8.8.8.8", 53, "UDP")  # egress is not isolated


def test_default_deny_explains_the_isolating_policy():
    v = net(DENY_INGRESS).check("default/frontend", "default/db", 6379)
    assert v.explain() == (
        "default/frontend -> default/db TCP/6379 is denied: ingress to default/db: isolated by "
        "default-deny-ingress; no rule allows it: default-deny-ingress has no ingress rules, so it allows "
        "nothing; egress from default/frontend: allowed, the pod is not isolated for Egress (no "
        "NetworkPolicy in 'default' selects it with policyType Egress)")


def test_allow_all_ingress_wins_over_default_deny_because_policies_add_up():
    n = net(DENY_INGRESS, ALLOW_INGRESS)
    v = n.check("elsewhere/frontend", "default/db", 12345)
    assert v.allowed
    assert [m.policy.name for m in v.ingress.matches] == ["allow-all-ingress"]
    assert str(v.ingress.matches[0]) == "allow-all-ingress ingress rule 1 (every source; port any)"


def test_default_deny_egress_blocks_outgoing_but_not_incoming():
    n = net(DENY_EGRESS)
    assert not n.check("default/frontend", "default/db", 6379)  # frontend cannot send
    assert not n.check("default/db", "8.8.8.8", 53, "UDP")
    assert n.check("myproject/worker", "default/db", 6379)  # ingress to db is open


def test_allow_all_egress_reopens_egress():
    assert net(DENY_EGRESS, ALLOW_EGRESS).check("default/db", "8.8.8.8", 53, "UDP")


def test_default_deny_all_blocks_both_directions():
    n = net(DENY_ALL)
    assert not n.check("default/frontend", "default/db", 6379)
    assert not n.check("myproject/worker", "default/db", 6379)
    assert not n.check("default/db", "myproject/worker", 80)


def test_connection_needs_egress_at_source_and_ingress_at_destination():
    allow_in = pol("db-in", {"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{}]})
    v = net(DENY_EGRESS, allow_in).check("default/frontend", "default/db", 6379)
    assert not v.allowed and v.ingress.allowed and not v.egress.allowed


def test_external_ends_are_not_subject_to_policies():
    v = net(DENY_ALL).check("203.0.113.1", "198.51.100.2", 80)
    assert v.allowed
    assert v.egress.explain() == "egress from 203.0.113.1: not a pod, so no NetworkPolicy applies"


# --- the test-network-policy example ------------------------------------------------------------

TEST_POLICY = pol("test-network-policy", {
    "podSelector": {"matchLabels": {"role": "db"}},
    "policyTypes": ["Ingress", "Egress"],
    "ingress": [{
        "from": [
            {"ipBlock": {"cidr": "172.17.0.0/16", "except": ["172.17.1.0/24"]}},
            {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
            {"podSelector": {"matchLabels": {"role": "frontend"}}},
        ],
        "ports": [{"protocol": "TCP", "port": 6379}],
    }],
    "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}], "ports": [{"protocol": "TCP", "port": 5978}]}],
})


@pytest.mark.parametrize("src,port,proto,allowed", [
    ("default/frontend", 6379, "TCP", True),  # podSelector peer, same namespace
    ("elsewhere/frontend", 6379, "TCP", False),  # same label, other namespace: not selected
    ("myproject/worker", 6379, "TCP", True),  # any pod of a namespace labelled project=myproject
    ("default/other", 6379, "TCP", False),
    ("172.17.0.5", 6379, "TCP", True),  # inside the ipBlock
    ("172.17.1.5", 6379, "TCP", False),  # inside the except
    ("172.18.0.1", 6379, "TCP", False),  # outside the cidr
    ("default/frontend", 6380, "TCP", False),  # port not listed
    ("default/frontend", 6379, "UDP", False),  # protocol not listed
])
def test_example_policy_ingress(src, port, proto, allowed):
    assert net(TEST_POLICY).check(src, "default/db", port, proto).allowed is allowed


@pytest.mark.parametrize("dst,port,allowed", [
    ("10.0.0.7", 5978, True), ("10.0.1.7", 5978, False), ("10.0.0.7", 5979, False),
    ("default/frontend", 80, False),
])
def test_example_policy_egress(dst, port, allowed):
    assert net(TEST_POLICY).check("default/db", dst, port).allowed is allowed


def test_example_policy_leaves_unselected_pods_alone():
    assert net(TEST_POLICY).check("default/other", "default/frontend", 80)


def test_example_policy_explains_which_peer_allowed():
    v = net(TEST_POLICY).check("myproject/worker", "default/db", 6379)
    assert v.ingress.explain() == (
        "ingress to default/db: isolated by test-network-policy; allowed by test-network-policy ingress "
        "rule 1 (peer 2: all pods in namespaces project=myproject; port TCP/6379)")


def test_example_policy_explains_a_denied_peer_and_port():
    n = net(TEST_POLICY)
    assert n.check("elsewhere/frontend", "default/db", 6379).ingress.misses == [
        "test-network-policy ingress rule 1: elsewhere/frontend matches none of its peers (ipBlock "
        "172.17.0.0/16 except 172.17.1.0/24; all pods in namespaces project=myproject; pods role=frontend "
        "in namespace default)"]
    assert n.check("default/db", "10.0.0.7", 22).egress.misses == [
        "test-network-policy egress rule 1: port TCP/22 is not among its ports (TCP/5978)"]


# --- peers: AND vs OR, namespaces ----------------------------------------------------------------

AND_PEER = pol("and", {"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"from": [
    {"namespaceSelector": {"matchLabels": {"project": "myproject"}},
     "podSelector": {"matchLabels": {"role": "frontend"}}}]}]})
OR_PEERS = pol("or", {"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"from": [
    {"namespaceSelector": {"matchLabels": {"project": "myproject"}}},
    {"podSelector": {"matchLabels": {"role": "frontend"}}}]}]})


@pytest.mark.parametrize("src,and_allowed,or_allowed", [
    ("myproject/frontend", True, True),  # both conditions
    ("myproject/worker", False, True),  # namespace only
    ("default/frontend", False, True),  # label only, in the policy's namespace
    ("elsewhere/frontend", False, False),  # label only, in another namespace
])
def test_one_peer_with_both_selectors_is_and_two_peers_are_or(src, and_allowed, or_allowed):
    assert net(AND_PEER).check(src, "default/db", 6379).allowed is and_allowed
    assert net(OR_PEERS).check(src, "default/db", 6379).allowed is or_allowed


def test_empty_namespace_selector_with_pod_selector_matches_that_label_everywhere():
    p = pol("anyns", {"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"from": [
        {"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "frontend"}}}]}]})
    assert net(p).check("elsewhere/frontend", "default/db", 6379)
    assert not net(p).check("myproject/worker", "default/db", 6379)


def test_namespace_name_label_is_implicit():
    p = pol("by-name", {"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"from": [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "elsewhere"}}}]}]})
    assert net(p).check("elsewhere/frontend", "default/db", 6379)
    assert not net(p).check("default/frontend", "default/db", 6379)
    assert Namespace("x").labels == {"kubernetes.io/metadata.name": "x"}


def test_policy_selects_pods_of_its_own_namespace_only():
    p = pol("deny-in-myproject", {"podSelector": {}, "policyTypes": ["Ingress"]}, ns="myproject")
    assert not net(p).check("default/frontend", "myproject/worker", 80)
    assert net(p).check("myproject/worker", "default/db", 6379)


# --- rules: empty vs missing ---------------------------------------------------------------------

@pytest.mark.parametrize("rules,allowed", [
    ([], False),  # isolated with no rules: nothing
    ([{}], True),  # one rule, no from and no ports: everything
    ([{"from": []}], True),  # empty from = every source
    ([{"from": [{"podSelector": {}}], "ports": []}], True),  # empty ports = every port
])
def test_empty_and_missing_rule_parts(rules, allowed):
    p = pol("p", {"podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Ingress"], "ingress": rules})
    assert net(p).check("default/frontend", "default/db", 9999).allowed is allowed


def test_pod_selector_peer_alone_never_matches_external_addresses():
    p = pol("p", {"podSelector": {}, "ingress": [{"from": [{"podSelector": {}}]}]})
    assert not net(p).check("203.0.113.9", "default/db", 6379)
    assert net(p).check("default/other", "default/db", 6379)


# --- policyTypes defaulting -----------------------------------------------------------------------

def test_policy_types_default_to_ingress_without_egress_rules():
    p = Policy.from_dict(pol("p", {"podSelector": {}, "ingress": [{}]}))
    assert p.policy_types == ("Ingress",)
    assert net(pol("p", {"podSelector": {}})).check("default/db", "8.8.8.8", 53, "UDP")


def test_policy_types_default_adds_egress_when_egress_rules_exist():
    spec = {"podSelector": {"matchLabels": {"role": "db"}}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}]}]}
    assert Policy.from_dict(pol("p", spec)).policy_types == ("Ingress", "Egress")
    n = net(pol("p", spec))
    assert n.check("default/db", "10.0.0.1", 80) and not n.check("default/db", "10.0.1.1", 80)
    assert not n.check("default/frontend", "default/db", 6379)  # ingress defaulted too, with no rules


def test_empty_egress_list_does_not_add_egress_by_default():
    assert Policy.from_dict(pol("p", {"podSelector": {}, "egress": []})).policy_types == ("Ingress",)


def test_egress_rules_are_ignored_when_policy_types_lists_only_ingress():
    spec = {"podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Ingress"],
            "ingress": [{}], "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}]}]}
    v = net(pol("p", spec)).check("default/db", "192.0.2.1", 80)
    assert v.allowed and not v.egress.isolating


def test_egress_only_policy_leaves_ingress_open():
    spec = {"podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Egress"], "ingress": []}
    assert net(pol("p", spec)).check("elsewhere/frontend", "default/db", 6379)


# --- ports: protocol, endPort, named ports ----------------------------------------------------------

def test_protocol_defaults_to_tcp():
    p = pol("p", {"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"ports": [{"port": 53}]}]})
    assert net(p).check("default/frontend", "default/db", 53, "TCP")
    assert not net(p).check("default/frontend", "default/db", 53, "UDP")


def test_port_entry_without_number_matches_every_port_of_its_protocol():
    p = pol("p", {"podSelector": {"matchLabels": {"role": "db"}}, "ingress": [{"ports": [{"protocol": "UDP"}]}]})
    assert net(p).check("default/frontend", "default/db", 5353, "UDP")
    assert not net(p).check("default/frontend", "default/db", 5353, "TCP")


@pytest.mark.parametrize("port,allowed", [(31999, False), (32000, True), (32500, True), (32768, True), (32769, False)])
def test_end_port_range_is_inclusive(port, allowed):
    p = pol("multi-port-egress", {"podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Egress"],
                                  "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/24"}}],
                                              "ports": [{"protocol": "TCP", "port": 32000, "endPort": 32768}]}]})
    assert net(p).check("default/db", "10.0.0.9", port).allowed is allowed


MYSQL_PODS = [
    Pod("app", "db", {"role": "db"}, "10.244.1.2", (ContainerPort(3306, "mysql"), ContainerPort(9104, "metrics"))),
    Pod("app", "db2", {"role": "db"}, "10.244.1.3", (ContainerPort(3307, "mysql"),)),
    Pod("app", "udp", {"role": "db"}, "10.244.1.4", (ContainerPort(3306, "mysql", "UDP"),)),
    Pod("app", "plain", {"role": "db"}, "10.244.1.5"),
    Pod("app", "api", {"role": "api"}, "10.244.1.6"),
]


@pytest.mark.parametrize("dst,port,allowed", [
    ("app/db", 3306, True),
    ("app/db", 9104, False),  # another named port of the same pod
    ("app/db2", 3307, True),  # the name resolves per destination pod
    ("app/db2", 3306, False),
    ("app/udp", 3306, False),  # the name exists only for UDP; the rule is TCP
    ("app/plain", 3306, False),  # no such name on this pod
])
def test_named_ingress_port_resolves_on_the_destination_pod(dst, port, allowed):
    p = pol("p", {"podSelector": {"matchLabels": {"role": "db"}},
                  "ingress": [{"ports": [{"port": "mysql"}]}]}, ns="app")
    assert Network([p], MYSQL_PODS).check("app/api", dst, port).allowed is allowed


def test_named_egress_port_resolves_on_the_destination_and_never_on_an_ip():
    p = pol("p", {"podSelector": {"matchLabels": {"role": "api"}}, "policyTypes": ["Egress"],
                  "egress": [{"ports": [{"protocol": "TCP", "port": "mysql"}]}]}, ns="app")
    n = Network([p], MYSQL_PODS)
    assert n.check("app/api", "app/db", 3306)
    assert not n.check("app/api", "192.0.2.7", 3306)


# --- ipBlock and pod IPs ----------------------------------------------------------------------------

def test_pod_ip_is_the_pod():
    n = net(TEST_POLICY)
    assert n.endpoint("10.244.1.11") is n.pod("default/frontend")
    assert n.check("10.244.1.11", "10.244.1.10", 6379)


def test_ipblock_matching_pod_ips_is_a_choice():
    p = pol("p", {"podSelector": {"matchLabels": {"role": "db"}},
                  "ingress": [{"from": [{"ipBlock": {"cidr": "10.244.3.0/24"}}]}]})
    v = net(p).check("elsewhere/frontend", "default/db", 6379)
    assert v.allowed and v.ingress.matches[0].by_pod_ip
    assert "not every network plugin does this" in v.explain()
    assert not net(p, ipblock_matches_pods=False).check("elsewhere/frontend", "default/db", 6379)


def test_ipv6_block():
    p = pol("p", {"podSelector": {"matchLabels": {"role": "db"}},
                  "ingress": [{"from": [{"ipBlock": {"cidr": "2001:db8::/64", "except": ["2001:db8::/120"]}}]}]})
    assert net(p).check("2001:db8::1:1", "default/db", 6379)
    assert not net(p).check("2001:db8::5", "default/db", 6379)


# --- label selectors ----------------------------------------------------------------------------------

@pytest.mark.parametrize("selector,labels,expected", [
    ({}, {}, True),
    ({"matchLabels": {"role": "db"}}, {"role": "db", "x": "y"}, True),
    ({"matchLabels": {"role": "db"}}, {"role": "web"}, False),
    ({"matchExpressions": [{"key": "role", "operator": "In", "values": ["db", "cache"]}]}, {"role": "cache"}, True),
    ({"matchExpressions": [{"key": "role", "operator": "In", "values": ["db"]}]}, {}, False),
    ({"matchExpressions": [{"key": "role", "operator": "NotIn", "values": ["db"]}]}, {}, True),
    ({"matchExpressions": [{"key": "role", "operator": "NotIn", "values": ["db"]}]}, {"role": "db"}, False),
    ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, {"tier": ""}, True),
    ({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}, {"tier": "a"}, False),
    ({"matchLabels": {"role": "db"}, "matchExpressions": [{"key": "env", "operator": "In", "values": ["prod"]}]},
     {"role": "db", "env": "dev"}, False),  # both parts must hold
])
def test_selector_matching(selector, labels, expected):
    assert selector_matches(selector, labels) is expected


def test_unknown_selector_operator_is_an_error():
    with pytest.raises(ValueError):
        selector_matches({"matchExpressions": [{"key": "a", "operator": "Equals"}]}, {})


def test_describe_selector():
    assert describe_selector({"matchLabels": {"role": "db"}, "matchExpressions": [
        {"key": "env", "operator": "NotIn", "values": ["a", "b"]}, {"key": "t", "operator": "DoesNotExist"}]}) == \
        "role=db,env notin (a,b),!t"


# --- reading API objects ------------------------------------------------------------------------------

def test_from_api_dicts():
    pod = {"metadata": {"name": "db", "namespace": "app", "labels": {"role": "db"}},
           "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 3306, "name": "mysql"}]}]},
           "status": {"podIP": "10.244.0.9"}}
    ns = {"metadata": {"name": "app", "labels": {"kubernetes.io/metadata.name": "app", "team": "x"}}}
    n = Network([pol("p", {"podSelector": {"matchLabels": {"role": "db"}},
                           "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "x"}}}],
                                        "ports": [{"port": "mysql"}]}]}, ns="app")], [pod], [ns])
    assert n.pod("app/db").ports == (ContainerPort(3306, "mysql", "TCP"),)
    assert n.check("10.244.0.9", "app/db", 3306).allowed  # a pod reaching itself by IP, through a policy
    assert not n.check("192.0.2.1", "app/db", 3306).allowed


def test_host_network_pods_are_never_isolated():
    pods = [Pod("default", "h", {"role": "db"}, "172.18.0.2", host_network=True), *PODS]
    assert net(DENY_ALL, pods=pods).check("default/h", "8.8.8.8", 53)


def test_unknown_pod_and_protocol_are_errors():
    with pytest.raises(KeyError):
        net().check("default/nope", "default/db", 1)
    with pytest.raises(ValueError):
        net().check("default/db", "default/db", 1, "ICMP")


# --- symbolic sets: everything a policy set allows ----------------------------------------------------

def test_ranges_merge_and_set_algebra():
    r = Ranges.of((5, 9), (1, 3), (4, 4), (20, 30))
    assert r.spans == ((1, 9), (20, 30))  # touching spans merge
    assert str(r - Ranges.of((3, 5), (25, 25))) == "1-2, 6-9, 20-24, 26-30"
    assert str(r & Ranges.of((8, 21))) == "8-9, 20-21"
    assert not Ranges.of((1, 2)) - Ranges.of((0, 5))
    assert 7 in r and 10 not in r


def test_port_sets_print_per_protocol():
    s = PortSet.single("TCP", 3306, 3400) | PortSet.single("UDP", 3306)
    assert str(s) == "TCP 3306-3400; UDP 3306"
    assert str(s - PortSet.single("TCP", 3306)) == "TCP 3307-3400; UDP 3306"
    assert str(PortSet.everything() - PortSet.single("TCP", 80)) == \
        "TCP 1-79, 81-65535; UDP (every port); SCTP (every port)"
    assert str(PortSet.everything()) == "every port of every protocol"
    assert ("UDP", 3306) in s and ("SCTP", 3306) not in s
    assert not PortSet.single("TCP", 80) - PortSet({"TCP": ALL_PORTS})


def test_address_sets_follow_ipblock_except():
    block = AddressSet.block({"cidr": "10.0.0.0/24", "except": ["10.0.0.128/25", "10.0.0.7/32"]})
    assert "10.0.0.6" in block and "10.0.0.7" not in block and "10.0.0.200" not in block
    assert block.cidrs() == ["10.0.0.0/30", "10.0.0.4/31", "10.0.0.6/32", "10.0.0.8/29", "10.0.0.16/28",
                             "10.0.0.32/27", "10.0.0.64/26"]
    assert str(block) == "10.0.0.0-10.0.0.6, 10.0.0.8-10.0.0.127"  # long CIDR lists print as ranges
    assert str(AddressSet.cidr("192.168.5.0/24") - AddressSet.cidr("192.168.5.0/25")) == "192.168.5.128/25"
    assert AddressSet.cidr("2001:db8::/64") and not AddressSet.cidr("not-a-cidr")
    assert str(AddressSet.everything() & AddressSet.cidr("::/0")) == "::/0"


def test_rule_ports_resolve_names_on_the_destination_pod():
    db = Pod("app", "db", ports=(ContainerPort(3306, "mysql"), ContainerPort(3306, "mysql", "UDP")))
    rule = {"ports": [{"port": "mysql"}, {"protocol": "SCTP"}, {"port": 22, "endPort": 25}]}
    assert str(rule_ports(rule, db)) == "TCP 22-25, 3306; SCTP (every port)"
    assert str(rule_ports(rule, None)) == "TCP 22-25; SCTP (every port)"  # an address has no port names
    assert rule_ports({}, None) == PortSet.everything()


LAB_PODS = [Pod("app", "api", {"role": "api"}, "10.244.0.3"),
            Pod("app", "db", {"role": "db"}, "10.244.0.4", (ContainerPort(3306, "mysql"),)),
            Pod("staging", "api", {"role": "api"}, "10.244.1.3")]
LAB_POLICY = pol("db-policy", {
    "podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Ingress", "Egress"],
    "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "api"}}}],
                 "ports": [{"port": "mysql"}, {"protocol": "UDP", "port": 3306, "endPort": 3310}]},
                {"from": [{"ipBlock": {"cidr": "10.244.0.0/24"}}], "ports": [{"port": 22}]}],
    "egress": [{"to": [{"ipBlock": {"cidr": "192.168.5.0/24", "except": ["192.168.5.128/25"]}}],
                "ports": [{"port": 80}]},
               {"to": [{"ipBlock": {"cidr": "192.168.5.10/32"}}], "ports": [{"port": 443}]}]}, ns="app")


def test_pod_grants_per_rule_and_peer():
    n = Network([LAB_POLICY], LAB_PODS)
    db = n.pod("app/db")
    grants = pod_grants(n, db, "Ingress", n.pod("app/api"))
    assert [(g.rule, g.peer, str(g.ports), g.by_ip) for g in grants] == [
        (1, 1, "TCP 3306; UDP 3306-3310", False), (2, 1, "TCP 22", True)]  # the ipBlock holds api's IP
    assert str(union_ports(grants)) == "TCP 22, 3306; UDP 3306-3310"
    # A pod that could be created: labels only, no IP, so no ipBlock matches it.
    assert str(union_ports(pod_grants(n, db, "Ingress", Pod("app", "new", {"role": "api"})))) == \
        "TCP 3306; UDP 3306-3310"
    assert not pod_grants(n, db, "Ingress", Pod("staging", "api", {"role": "api"}))
    # Not isolated: one grant for everything, without a policy.
    [g] = pod_grants(n, n.pod("app/api"), "Ingress", db)
    assert g.policy is None and g.ports == PortSet.everything()


def test_address_grants_and_coverage():
    n = Network([LAB_POLICY], LAB_PODS)
    db = n.pod("app/db")
    grants = address_grants(n, db, "Egress")
    assert [(g.rule, str(g.addresses), str(g.ports)) for g in grants] == [
        (1, "192.168.5.0/25", "TCP 80"), (2, "192.168.5.10/32", "TCP 443")]
    assert [(str(a), str(p)) for a, p in coverage(grants, AddressSet.cidr("192.168.5.8/29"))] == [
        ("192.168.5.8/31", "TCP 80"), ("192.168.5.10/32", "TCP 80, 443"),
        ("192.168.5.11/32, 192.168.5.12/30", "TCP 80")]  # neighbours with the same ports merge
    assert [(str(a), str(p)) for a, p in coverage(grants, AddressSet.cidr("192.168.5.200/32"))] == [
        ("192.168.5.200/32", "no port")]
    rule_without_peers = pol("all-out", {"podSelector": {"matchLabels": {"role": "db"}}, "policyTypes": ["Egress"],
                                         "egress": [{"ports": [{"protocol": "UDP", "port": 53}]}]}, ns="app")
    [g] = address_grants(Network([rule_without_peers], LAB_PODS), db, "Egress")
    assert g.peer is None and g.addresses == AddressSet.everything() and str(g.ports) == "UDP 53"
