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
import subprocess
import time

import yaml

from ckalab import learner_files
from ckalab.grading import check, expect, fail, fixture, skip

NODE = "controlplane"
MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
ON_NODE = "on the node: ckalab ssh controlplane"
LOOK_CONTAINER = "crictl ps -a --name kube-apiserver, then crictl logs CONTAINER-ID"
LEVELS = ("None", "Metadata", "Request", "RequestResponse")
TIMEOUT = 3  # seconds for each request to the API server: a check must never hang on it
# Where each resource the task may name lives: (API group, version, kind).
RESOURCES = {"configmaps": ("", "v1", "ConfigMap"), "serviceaccounts": ("", "v1", "ServiceAccount"),
             "roles": ("rbac.authorization.k8s.io", "v1", "Role")}


# --- the node's files ---------------------------------------------------------------------------

def _node_file(cluster, path: str, tail: bool = False) -> bytes | None:
    """A file of the controlplane node (None: no such regular file), at most 4 MB: its beginning,
    or with `tail` its end (a log's newest lines)."""
    script = 'test -f "$1" || exit 3; ' + ('tail -c 4000000 "$1"' if tail else 'head -c 1000001 "$1"')
    argv, env = cluster.shell(NODE, ["sh", "-c", script, "sh", path])
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, timeout=15)
    except subprocess.TimeoutExpired:
        fail(f"Reading {path} on the controlplane node took longer than 15 s. Look: ls -l {path} ({ON_NODE}).")
    return proc.stdout if proc.returncode == 0 else None


def _yaml(data: bytes, path: str, what: str):
    try:
        return learner_files.parse_yaml(data.decode("utf-8"), path)
    except UnicodeDecodeError:
        fail(f"{path} is not a text file. Look: cat {path} ({ON_NODE}).")
    except learner_files.LearnerFileError as exc:
        fail(str(exc))
    except yaml.YAMLError as exc:
        fail(f"{learner_files.yaml_error_text(exc, path)} {what} Look: cat -A {path} ({ON_NODE}); "
             "indentation uses spaces only.")


class ApiServerPod:
    """The API server's static pod manifest as the kubelet reads it: flags and hostPath mounts."""

    def __init__(self, cluster):
        data = _node_file(cluster, MANIFEST)
        expect(data is not None, f"{MANIFEST} is missing on the controlplane node, so the kubelet runs no API "
               f"server. Look: ls /etc/kubernetes/manifests ({ON_NODE}).")
        pod = _yaml(data, MANIFEST, "The kubelet cannot read it either, so the API server does not run.")
        containers = (pod.get("spec") or {}).get("containers") if isinstance(pod, dict) else None
        expect(isinstance(containers, list) and containers and isinstance(containers[0], dict),
               f"{MANIFEST} is not a Pod with a container (spec.containers). Look: cat {MANIFEST} ({ON_NODE}).")
        self.spec, self.container = pod["spec"], containers[0]
        args = [str(a) for a in list(self.container.get("command") or []) + list(self.container.get("args") or [])]
        self.flags: dict[str, str] = {}
        for i, arg in enumerate(args):  # the last of a repeated flag wins, as in the API server
            if arg.startswith("--"):
                key, eq, value = arg[2:].partition("=")
                if not eq and i + 1 < len(args) and not args[i + 1].startswith("-"):
                    value = args[i + 1]
                self.flags[key] = value.strip()

    def flag(self, name: str) -> str:
        value = self.flags.get(name)
        expect(value, f"{MANIFEST} has no --{name}. Look: grep -- --audit {MANIFEST} ({ON_NODE}).")
        return value

    def mount_of(self, container_path: str) -> tuple[dict, str] | None:
        """The volumeMount that shows `container_path` to the container (the deepest one) and the
        path on the node it leads to; None when no hostPath volume covers it."""
        path = posixpath.normpath(container_path)
        volumes = {v.get("name"): (v.get("hostPath") or {}).get("path") for v in self.spec.get("volumes") or []
                   if isinstance(v, dict)}
        best = None
        for m in self.container.get("volumeMounts") or []:
            if not isinstance(m, dict):
                continue
            mount, host = posixpath.normpath(str(m.get("mountPath", "/-"))), volumes.get(m.get("name"))
            if host and (path == mount or path.startswith(mount.rstrip("/") + "/")):
                if best is None or len(mount) > len(best[0]):
                    best = (mount, host, m)
        if best is None:
            return None
        return best[2], posixpath.normpath(best[1] + path[len(best[0]):])

    def mounts(self) -> str:
        return ", ".join(str(m.get("mountPath")) for m in self.container.get("volumeMounts") or []
                         if isinstance(m, dict)) or "none"


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
    data = _node_file(node, path)
    expect(data is not None, f"No file {path} on the controlplane node. Look: ls -l {posixpath.dirname(path)} "
           f"({ON_NODE}).")
    policy = _yaml(data, path, "The API server cannot start with a policy it cannot read.")
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

def _container_state(cluster) -> str:
    try:
        argv, env = cluster.shell(NODE, ["crictl", "ps", "-a", "--name", "kube-apiserver", "-o", "json"])
        found = json.loads(subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10).stdout
                           ).get("containers") or []
    except Exception:  # noqa: BLE001 - say nothing about the container then
        return ""
    if not found:
        return " The node's container runtime has no kube-apiserver container."
    c = max(found, key=lambda x: int(x.get("createdAt", 0)))
    state = str(c.get("state", "?")).removeprefix("CONTAINER_").lower()
    return f" On the node its newest container is {state}."


def _why(exc: Exception) -> str:
    """Why a request got no answer, in words."""
    text = str(exc)
    if "refused" in text:
        return "connection refused: nothing listens there"
    if "timed out" in text or "timeout" in text.lower():
        return f"no answer within {TIMEOUT} s"
    return "the connection failed"


@check(1, "the API server is running and answers", hint=LOOK_CONTAINER)
def test_api_server_up(node, lab):
    from ckalab.kube import Kube

    try:  # a namespace read goes through to etcd: the API server serves, not only listens
        Kube(node.kubeconfig, timeout=TIMEOUT).request("GET", f"/api/v1/namespaces/{lab.params['namespace']}")
    except Exception as exc:  # noqa: BLE001 - down, restarting, refusing: all say the same to the learner
        if getattr(exc, "status", None):
            return  # an HTTP answer (even a 404) is an API server that serves
        fail(f"The API server does not answer ({_why(exc)}).{_container_state(node)} While it is down, only the "
             f"node's files are checked. Look: {LOOK_CONTAINER} ({ON_NODE}).")


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
            data = _node_file(cluster, self.log, tail=True) or b""
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
