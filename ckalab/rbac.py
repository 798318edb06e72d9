"""Reading RBAC the way the authorizer does.

Two jobs:
- explain a Role's shape (which verb or resource name is off) so a message can point at it;
  behaviour is still confirmed with SubjectAccessReview (Kube.can);
- judge least privilege from a subject's *effective rules*: every rule that any RoleBinding or
  ClusterRoleBinding naming the subject (or one of its groups) grants, compared with exactly what
  a task allows. Sampling a few permissions misses `pods/exec`, `list secrets` or `nodes/proxy`;
  walking the bindings misses nothing, and says where each extra right comes from.

The built-in bindings every cluster has (labelled kubernetes.io/bootstrapping=rbac-defaults, such
as system:basic-user for system:authenticated) are the baseline every identity gets; they are
not counted as extra rights.
"""

from __future__ import annotations

from dataclasses import dataclass

RBAC = "rbac.authorization.k8s.io/v1"
BOOTSTRAP = ("kubernetes.io/bootstrapping", "rbac-defaults")

# Cluster-scoped resources a namespaced RoleBinding cannot grant (the authorizer never matches a
# namespaced binding against a request without a namespace), so such a rule grants nothing.
CLUSTER_SCOPED = {
    "nodes", "persistentvolumes", "storageclasses", "namespaces", "clusterroles", "clusterrolebindings",
    "certificatesigningrequests", "customresourcedefinitions", "priorityclasses", "volumeattachments",
    "csidrivers", "csinodes", "ingressclasses", "runtimeclasses", "mutatingwebhookconfigurations",
    "validatingwebhookconfigurations", "validatingadmissionpolicies", "validatingadmissionpolicybindings",
    "apiservices", "tokenreviews", "subjectaccessreviews", "selfsubjectreviews", "selfsubjectaccessreviews",
    "selfsubjectrulesreviews", "componentstatuses",
}


def rule_covers(rule: dict, resource: str, group: str = "", verb: str | None = None) -> bool:
    """True when one PolicyRule grants `verb` (any verb when None) on `resource` in API `group`."""
    def has(field: str, value: str) -> bool:
        return bool({value, "*"} & set(rule.get(field) or []))

    return has("apiGroups", group) and has("resources", resource) and (verb is None or has("verbs", verb))


def missing_verbs(rules: list[dict], resource: str, verbs, group: str = "") -> list[str]:
    """The verbs in `verbs` that no rule grants on `resource`."""
    return [v for v in verbs if not any(rule_covers(r, resource, group, v) for r in rules)]


def misnamed_resources(rules: list[dict], wrong: tuple[str, ...] = ()) -> list[str]:
    """Resource names the authorizer will never match: not lowercase, or a known singular or
    short name from `wrong` (RBAC wants the lowercase plural, e.g. 'pods', not 'Pod' or 'po')."""
    return [x for r in rules for x in r.get("resources") or [] if x != x.lower() or x in wrong]


# --- effective rules -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Allowed:
    """What a task allows: `verbs` on `resource` (API `group`), in `namespace` or cluster-wide (None)."""
    resource: str
    verbs: tuple[str, ...]
    group: str = ""
    namespace: str | None = None


@dataclass(frozen=True)
class Grant:
    """One PolicyRule as a subject receives it through one binding."""
    rule: dict
    namespace: str | None  # the RoleBinding's namespace; None for a ClusterRoleBinding
    source: str             # "Role 'developer' via RoleBinding 'dev-user-binding' in 'default'"


@dataclass(frozen=True)
class Subject:
    """An identity as the authorizer sees it: user name and groups."""
    user: str
    groups: tuple[str, ...] = ("system:authenticated",)

    @classmethod
    def service_account(cls, namespace: str, name: str) -> "Subject":
        return cls(f"system:serviceaccount:{namespace}:{name}",
                   ("system:serviceaccounts", f"system:serviceaccounts:{namespace}", "system:authenticated"))

    def named_by(self, subject: dict, binding_ns: str | None) -> bool:
        kind, name = subject.get("kind"), subject.get("name")
        if kind == "User":
            return name == self.user
        if kind == "Group":
            return name in self.groups
        if kind == "ServiceAccount":
            return self.user == f"system:serviceaccount:{subject.get('namespace') or binding_ns}:{name}"
        return False


def _bootstrap(obj: dict) -> bool:
    return (obj["metadata"].get("labels") or {}).get(BOOTSTRAP[0]) == BOOTSTRAP[1]


def grants(kube, subject: Subject) -> list[Grant]:
    """Every rule any non-default binding gives `subject`, with where it comes from."""
    out: list[Grant] = []
    croles = {r["metadata"]["name"]: r for r in kube.list(RBAC, "ClusterRole")}
    bindings = ([(b, None) for b in kube.list(RBAC, "ClusterRoleBinding")]
                + [(b, b["metadata"]["namespace"]) for b in kube.list(RBAC, "RoleBinding")])
    roles: dict[tuple[str, str], dict | None] = {}
    for b, ns in bindings:
        if _bootstrap(b) or not any(subject.named_by(s, ns) for s in b.get("subjects") or []):
            continue
        ref = b.get("roleRef") or {}
        if ref.get("kind") == "Role":
            key = (ns, ref.get("name"))
            if key not in roles:
                roles[key] = kube.get(RBAC, "Role", ref.get("name"), ns) if ns else None
            role = roles[key]
        else:
            role = croles.get(ref.get("name"))
        where = f" in '{ns}'" if ns else ""
        source = f"{ref.get('kind')} '{ref.get('name')}' via {'RoleBinding' if ns else 'ClusterRoleBinding'} " \
                 f"'{b['metadata']['name']}'{where}"
        for rule in (role or {}).get("rules") or []:
            out.append(Grant(rule, ns, source))
    return out


def _listed(values: list[str]) -> str:
    return ", ".join(values)


def _scope(ns: str | None) -> str:
    return f"in '{ns}'" if ns else "in every namespace and cluster-wide"


def _allowed_verbs(allowed: list[Allowed], group: str, resource: str, ns: str | None) -> set[str]:
    """The verbs the task allows on (group, resource) for a grant scoped to `ns`."""
    return {v for a in allowed if a.group == group and a.resource == resource
            and (a.namespace is None or a.namespace == ns) for v in a.verbs}


def served_resources(kube) -> set[tuple[str, str]]:
    """(API group, resource) pairs the API server serves, subresources as 'pods/exec'. Two
    requests, using aggregated discovery (the same view `kubectl api-resources` has)."""
    import json

    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    out: set[tuple[str, str]] = set()
    for path in ("/api", "/apis"):
        method, url, headers, body, _ = kube.api.param_serialize("GET", path, header_params={"Accept": accept},
                                                                 auth_settings=["BearerToken"])
        resp = kube.api.call_api(method, url, header_params=headers, body=body, _request_timeout=10)
        resp.read()
        for group in json.loads(resp.data).get("items") or []:
            name = (group.get("metadata") or {}).get("name", "")
            for version in group.get("versions") or []:
                for res in version.get("resources") or []:
                    out.add((name, res["resource"]))
                    out.update((name, f"{res['resource']}/{sub['subresource']}") for sub in res.get("subresources") or [])
    return out


def extra_rights(grant_list: list[Grant], allowed: list[Allowed], kube=None) -> list[str]:
    """Each right in `grant_list` that `allowed` does not cover, as a sentence naming its source.
    Wildcards (`*` verbs, resources, API groups), subresources (pods/exec), resourceNames and
    non-resource URLs are all judged: a rule restricted by resourceNames is a subset of the same
    rule without them, so it is extra exactly when that would be. With `kube`, a named resource
    the server does not serve in that group (storageclasses in the core group, from a rule that
    lists two groups and two resources) grants nothing and is not counted."""
    out: list[str] = []
    served: set[tuple[str, str]] | None = None
    for g in grant_list:
        rule, ns = g.rule, g.namespace
        verbs = list(rule.get("verbs") or [])
        if rule.get("nonResourceURLs"):
            if g.namespace is None:  # a RoleBinding cannot grant non-resource URLs
                out.append(f"{_listed(verbs)} on the non-resource URLs {_listed(rule['nonResourceURLs'])} "
                           f"(from {g.source})")
            continue
        names = rule.get("resourceNames") or []
        named = f" named {_listed(names)}" if names else ""
        for group in rule.get("apiGroups") or []:
            for resource in rule.get("resources") or []:
                if ns is not None and resource in CLUSTER_SCOPED:
                    continue  # no effect through a namespaced binding
                what = "every resource (*)" if resource == "*" else resource
                api = "every API group (*)" if group == "*" else ("the core API group" if group == "" else group)
                ok = set() if "*" in (group, resource) else _allowed_verbs(allowed, group, resource, ns)
                if "*" in verbs:
                    out.append(f"every verb (*) on {what}{named} in {api} {_scope(ns)} (from {g.source})")
                    continue
                extra = [v for v in verbs if v not in ok]
                if extra and kube is not None and "*" not in (group, resource):
                    served = served_resources(kube) if served is None else served
                    if (group, resource) not in served:
                        continue
                if extra:
                    out.append(f"{_listed(extra)} on {what}{named} in {api} {_scope(ns)} (from {g.source})")
    return list(dict.fromkeys(out))
