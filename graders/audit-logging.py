"""Grader for audit-logging: the learner's audit policy on the controlplane node, wired into the
API server's static pod, judged by what the API server really writes.

The file checks read the node (the manifest, the policy), so they report while the API server is
down. The behaviour checks make requests of their own, with names no one else uses, and look for
those names in the log file the manifest names (read on the node, bounded in size and time): a
Secret must appear at Metadata and never with its contents, the task's resource at
RequestResponse, and the grader's other requests not at all.
"""

from __future__ import annotations

import base64
import json
import posixpath
import secrets
import time

from ckalab.controlplane import (API_SERVER as MANIFEST, LOOK_CONTAINER, ON_NODE, StaticPod,
                                 expect_api_server_serves, parse_yaml, read_file)
from ckalab.grading import check, expect, fail, fixture, skip

LEVELS = ("None", "Metadata", "Request", "RequestResponse")
# Where each resource the task may name lives: (API group, version, kind).
RESOURCES = {"configmaps": ("", "v1", "ConfigMap"), "serviceaccounts": ("", "v1", "ServiceAccount"),
             "roles": ("rbac.authorization.k8s.io", "v1", "Role")}


class ApiServerPod(StaticPod):
    """The API server's static pod, with the audit flags the task needs."""

    def flag(self, name: str) -> str:
        value = self.flags.get(name)
        expect(value, f"{MANIFEST} has no --{name}. Look: grep -- --audit {MANIFEST} ({ON_NODE}).")
        return value


@fixture(scope="module")
def node(cluster):
    """The cluster, when its API server runs as a static pod on a node with a shell."""
    if not (cluster.offers("static-pods") and cluster.offers("node-shell")):
        skip("needs the control plane as static pods on a real node ('ckalab up --nodes real', as root)")
    return cluster


def _on_node(pod: ApiServerPod, flag: str, want: str, writable: bool = False) -> None:
    """--flag must name, through a hostPath volume, the node path `want`."""
    path = pod.flag(flag)
    found = pod.mount_of(path)
    expect(found, f"--{flag}={path} is inside the container only: no hostPath volume is mounted there "
           f"(mounts: {pod.mounts()}), so the API server {'cannot read the policy' if not writable else 'writes a log that no one on the node sees and that is lost with the container'}. "
           f"Look: the volumeMounts and volumes of {MANIFEST}.")
    mount, host = found
    expect(host == want, f"--{flag}={path} is {host} on the node (through the volume '{mount.get('name')}'); "
           f"the task asks for {want}. Look: grep -- --{flag} {MANIFEST}, and that volume's hostPath.")
    if writable:
        expect(not mount.get("readOnly"), f"The volume '{mount.get('name')}' that holds --{flag}={path} is mounted "
               f"readOnly: the API server cannot write its log there. Look: the volumeMounts of {MANIFEST}.")


# --- the files ------------------------------------------------------------------------------------

@check(2, "the audit policy file on the node is a valid Policy", hint="cat the policy file on the node")
def test_policy(node, lab):
    path = lab.params["policy"]
    data = read_file(node, path)
    expect(data is not None, f"No file {path} on the controlplane node. Look: ls -l {posixpath.dirname(path)} "
           f"({ON_NODE}).")
    policy = parse_yaml(data, path, "The API server cannot start with a policy it cannot read.")
    expect(isinstance(policy, dict), f"{path} is not a YAML mapping. Look: cat {path} ({ON_NODE}).")
    expect(policy.get("apiVersion") == "audit.k8s.io/v1" and policy.get("kind") == "Policy",
           f"{path} has apiVersion '{policy.get('apiVersion')}' and kind '{policy.get('kind')}'; an audit policy is "
           "apiVersion audit.k8s.io/v1, kind Policy.")
    rules = policy.get("rules")
    expect(isinstance(rules, list) and rules, f"{path} has no rules: the API server refuses a policy without "
           "any. Look: its rules list.")
    for i, rule in enumerate(rules, 1):
        level = rule.get("level") if isinstance(rule, dict) else None
        expect(level in LEVELS, f"Rule {i} of {path} has level '{level}'; a level is one of {', '.join(LEVELS)} "
               "(spelled exactly so).")


@check(2, "the API server reads the policy from that file", hint=f"grep -- --audit-policy-file {MANIFEST}")
def test_policy_flag(node, lab):
    _on_node(ApiServerPod(node), "audit-policy-file", lab.params["policy"])


@check(2, "the API server writes its audit log to the file asked for", hint=f"grep -- --audit-log-path {MANIFEST}")
def test_log_flag(node, lab):
    pod = ApiServerPod(node)
    expect(pod.flag("audit-log-path") != "-", "--audit-log-path=- sends the audit events to the API server's standard "
           f"output (crictl logs), not to a file on the node. Look: grep -- --audit-log-path {MANIFEST} ({ON_NODE}).")
    _on_node(pod, "audit-log-path", lab.params["log"], writable=True)


@check(1, "old audit logs are kept as long and as many as asked", hint=f"grep -- --audit-log-max {MANIFEST}")
def test_retention(node, lab):
    pod = ApiServerPod(node)
    for flag, param, what in (("audit-log-maxage", "maxage", "days"), ("audit-log-maxbackup", "maxbackup", "files")):
        want, got = str(lab.params[param]), pod.flags.get(flag)
        expect(got == want, f"--{flag} is {got if got is not None else 'not set'}; the task asks to keep old logs at "
               f"most {want} {what}. Look: grep -- --audit-log-max {MANIFEST} ({ON_NODE}).")


# --- behaviour --------------------------------------------------------------------------------

@check(1, "the API server is running and answers", hint=LOOK_CONTAINER)
def test_api_server_up(node, lab):
    expect_api_server_serves(node, lab.params["namespace"])


class Probe:
    """Requests made for the check, each naming an object no one else uses, then the log's events
    that name them."""

    def __init__(self, cluster, lab):
        self.ns, self.resource = lab.params["namespace"], lab.params["resource"]
        self.marker = f"ckalab-audit-{secrets.token_hex(4)}"
        self.names = {"secret": f"{self.marker}-secret", "resource": f"{self.marker}-{self.resource[:-1]}",
                      "other": f"{self.marker}-other", "pod": f"{self.marker}-pod"}
        pod = ApiServerPod(cluster)
        found = pod.mount_of(pod.flag("audit-log-path"))
        self.log = found[1] if found else None
        from ckalab.kube import Kube

        self.kube = Kube(cluster.kubeconfig, timeout=10)
        self._requests()
        self.events = self._read(cluster)

    def _requests(self) -> None:
        group, version, kind = RESOURCES[self.resource]
        api = f"{group}/{version}" if group else version
        secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": ""},
                  "data": {"password": base64.b64encode(b"audit-probe").decode()}}
        objects = {"Secret": secret, "ConfigMap": {"apiVersion": "v1", "kind": "ConfigMap", "data": {"k": "v"}},
                   "ServiceAccount": {"apiVersion": "v1", "kind": "ServiceAccount"},
                   "Role": {"apiVersion": api, "kind": "Role", "rules": []}}
        todo = [("v1", "Secret", self.names["secret"], self.ns), (api, kind, self.names["resource"], self.ns),
                ("v1", "Secret", self.names["other"], "default"), (api, kind, self.names["other"], "default")]
        for api_version, k, name, ns in todo:
            body = dict(objects[k], apiVersion=api_version, metadata={"name": name, "namespace": ns})
            path = self.kube._collection(api_version, k, ns)[0]
            try:
                self.kube.request("POST", path, body=body)
                self.kube.request("GET", f"{path}/{name}")
            finally:
                try:
                    self.kube.request("DELETE", f"{path}/{name}")
                except Exception:  # noqa: BLE001 - it may not have been created
                    pass
        try:
            self.kube.request("GET", f"/api/v1/namespaces/{self.ns}/pods/{self.names['pod']}")
        except Exception:  # noqa: BLE001 - a 404 is the point: the request is made, and audited or not
            pass

    def _read(self, cluster) -> list[dict]:
        """The events naming the marker; the log backend may write a moment after the answer."""
        if not self.log:
            return []
        deadline = time.monotonic() + 6
        while True:
            data = read_file(cluster, self.log, tail=True) or b""
            events = []
            for line in data.decode("utf-8", "replace").splitlines():
                if self.marker in line:
                    try:
                        events.append(json.loads(line))
                    except ValueError:
                        continue
            # the last request of each expected kind is a DELETE: wait for those
            deletes = {e.get("objectRef", {}).get("name") for e in events if e.get("verb") == "delete"}
            if {self.names["secret"], self.names["resource"]} <= deletes or time.monotonic() > deadline:
                return events
            time.sleep(0.5)

    def of(self, key: str, namespace: str | None = None) -> list[dict]:
        return [e for e in self.events if (e.get("objectRef") or {}).get("name") == self.names[key]
                and (namespace is None or (e.get("objectRef") or {}).get("namespace") == namespace)]

    def where(self) -> str:
        return f"{self.log} on the node"


@fixture(scope="module")
def probe(node, lab):
    pod = ApiServerPod(node)
    path = pod.flag("audit-log-path")
    expect(path != "-", f"--audit-log-path=- sends the audit events to the API server's standard output, not to "
           f"a file on the node. Look: grep -- --audit-log-path {MANIFEST} ({ON_NODE}).")
    expect(pod.mount_of(path), f"--audit-log-path={path} is not on a hostPath volume: its events cannot be read "
           f"on the node. Look: the volumeMounts of {MANIFEST}.")
    return Probe(node, lab)


def _levels(events: list[dict]) -> str:
    return ", ".join(sorted({f"{e.get('verb')} at {e.get('level')}" for e in events}))


@check(3, "a Secret in the namespace is logged at Metadata, without its contents",
       after=["test_api_server_up", "test_log_flag"], hint="the first rule that matches a request decides its level")
def test_secrets_metadata(probe, lab):
    ns, path = lab.params["namespace"], lab.params["policy"]
    events = probe.of("secret", ns)
    expect(events, f"The grader created, read and deleted Secret '{probe.names['secret']}' in namespace '{ns}', and "
           f"{probe.where()} has no event for it. Look: the rules in {path} (the first rule that matches decides), "
           f"and tail {probe.log} after kubectl get secret -n {ns} ({ON_NODE}). The API server reads the policy "
           "only when it starts.")
    leaked = [e for e in events if e.get("level") in ("Request", "RequestResponse")]
    expect(not leaked, f"Secret '{probe.names['secret']}' in namespace '{ns}' was logged with its contents "
           f"({_levels(leaked)}): the log now holds the Secret's data. The task asks for Metadata. Look: the rule "
           f"that matches secrets in {path}.")
    expect(all(e.get("level") == "Metadata" for e in events),
           f"Secret '{probe.names['secret']}' in namespace '{ns}' was logged as {_levels(events)}; the task asks for "
           f"Metadata. Look: the rules in {path}.")
    verbs = {e.get("verb") for e in events}
    expect({"create", "get", "delete"} <= verbs, f"Only some requests on Secret '{probe.names['secret']}' in "
           f"namespace '{ns}' were logged ({_levels(events)}); the task asks for every request on Secrets there. "
           f"Look: the verbs of the rule in {path}.")


@check(3, "the task's resource in the namespace is logged at RequestResponse",
       after=["test_api_server_up", "test_log_flag"], hint="a rule's resources name a group and resources")
def test_resource_request_response(probe, lab):
    ns, path, resource = lab.params["namespace"], lab.params["policy"], lab.params["resource"]
    name = probe.names["resource"]
    events = probe.of("resource", ns)
    expect(events, f"The grader created, read and deleted {resource} '{name}' in namespace '{ns}', and "
           f"{probe.where()} has no event for it. Look: the rule for {resource} in {path} and the API group "
           f"that kubectl api-resources shows for {resource}; then tail {probe.log} after a request ({ON_NODE}).")
    expect(all(e.get("level") == "RequestResponse" for e in events),
           f"{resource} '{name}' in namespace '{ns}' was logged as {_levels(events)}; the task asks for "
           f"RequestResponse. Look: the rules in {path} (the first rule that matches decides).")
    create = [e for e in events if e.get("verb") == "create" and e.get("stage") == "ResponseComplete"]
    expect(create and create[0].get("requestObject") and create[0].get("responseObject"),
           f"The create of {resource} '{name}' was logged without the request and response bodies. Look: tail "
           f"{probe.log} ({ON_NODE}).")


@check(2, "nothing else is logged", after=["test_api_server_up", "test_log_flag"],
       hint="a last rule with only a level catches everything the rules above did not")
def test_rest_not_logged(probe, lab):
    ns, path = lab.params["namespace"], lab.params["policy"]
    extra = probe.of("other") + probe.of("pod")
    if extra:
        first = extra[0].get("objectRef") or {}
        fail(f"The log also records requests the task leaves out: {first.get('resource')} '{first.get('name')}' in "
             f"namespace '{first.get('namespace')}' ({_levels(extra)}). The task asks for nothing but Secrets and "
             f"{lab.params['resource']} in namespace '{ns}'. Look: the rules in {path}, the last one especially.")
