"""Grader for kubelet-security: who node01's kubelet lets in, measured on its own port.

Every request goes from the controlplane node (cluster.shell) to node01's address on port 10250,
as the API server and the exam's `curl` make them: with no credentials (must be refused: 401),
with a ServiceAccount token that has no rights on nodes (must be recognised and refused: 403,
which proves webhook authentication and webhook authorization) and with the API server's
kubelet client certificate (must be let in: 200). The read-only port must refuse connections.
The configuration file on node01 is read too: it must parse and keep the settings, because the
kubelet reads it again at its next start. Every request is bounded (curl --max-time), so a
stopped kubelet gives a message, never a hanging check.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass

import yaml

from ckalab import learner_files
from ckalab.grading import check, expect, fail, fixture, skip

NODE = "node01"
PORT = 10250
CONF = "/var/lib/kubelet/config.yaml"
PKI = "/etc/kubernetes/pki"
CLIENT_CERT = (f"{PKI}/apiserver-kubelet-client.crt", f"{PKI}/apiserver-kubelet-client.key")
PROBE_SA = ("default", "default")  # a ServiceAccount that exists in every cluster, with no rights on nodes
LOOK_FILE = f"Look on {NODE}: grep -A8 '^authentication' {CONF}; grep -A3 '^authorization' {CONF}"
RESTART = f"look on {NODE}: systemctl status kubelet"
# What curl's exit codes mean for a probe that got no HTTP answer.
CURL_ERRORS = {7: "connection refused", 28: "no answer within 4 s", 35: "the TLS handshake failed",
               52: "an empty reply", 56: "the connection was reset"}
# The settings the task asks for, with the defaults of KubeletConfiguration v1beta1 for a key
# the file leaves out (an absent key is as good as the secure value written out).
SETTINGS = {  # dotted key -> (default, wanted)
    "authentication.anonymous.enabled": (False, False),
    "authentication.webhook.enabled": (True, True),
    "authorization.mode": ("Webhook", "Webhook"),
    "readOnlyPort": (0, 0),
}
MODES = ("AlwaysAllow", "Webhook")
HTTP_REASON = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found"}


@dataclass
class Answer:
    code: int  # the HTTP status; 0 when there was no HTTP answer
    exit: int  # curl's exit code
    body: str

    def said(self) -> str:
        if self.code:
            return f"{self.code} {HTTP_REASON.get(self.code, '')}".strip()
        return CURL_ERRORS.get(self.exit, f"no HTTP answer (curl exit {self.exit})")



def _dig(doc, dotted: str):
    """(found, value) of a dotted key in nested mappings."""
    for part in dotted.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return False, None
        doc = doc[part]
    return True, doc


def effective(doc: dict, dotted: str):
    found, value = _dig(doc, dotted)
    return value if found else SETTINGS[dotted][0]


def show(value) -> str:
    """A value as YAML writes it (true/false for booleans)."""
    return json.dumps(value) if isinstance(value, bool) else str(value)


class Kubelet:
    """node01's kubelet as seen from the controlplane node: requests and its files."""

    def __init__(self, cluster, kube, lab):
        self.cluster, self.kube, self.lab = cluster, kube, lab
        node = kube.get("v1", "Node", NODE)
        if node is None:
            fail(f"Node '{NODE}' not found (kubectl get nodes): its kubelet has not registered.")
        self.node = node
        addresses = (node.get("status") or {}).get("addresses") or []
        self.ip = next((a["address"] for a in addresses if a.get("type") == "InternalIP"), None)
        expect(self.ip, f"Node '{NODE}' has no InternalIP (kubectl get node {NODE} -o wide).")
        self.url = f"https://{self.ip}:{PORT}"

    def _run(self, node: str, argv: list[str], stdin: str | None = None, timeout: float = 15):
        argv, env = self.cluster.shell(node, argv)
        try:
            return subprocess.run(argv, env=env, input=stdin, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 124, "", f"no answer within {timeout:.0f} s")

    def get(self, path: str, cert: bool = False, token: str | None = None, url: str | None = None) -> Answer:
        """GET url/path from the controlplane node. -k: a kubeadm kubelet serves a self-signed
        certificate unless serverTLSBootstrap is on; who the *client* is, is what is graded here.
        A token goes in through stdin (-H @-), never on a command line."""
        argv = ["curl", "-sk", "--max-time", "4", "-w", "\n%{http_code}"]
        if cert:
            argv += ["--cert", CLIENT_CERT[0], "--key", CLIENT_CERT[1]]
        if token:
            argv += ["-H", "@-"]
        proc = self._run("controlplane", [*argv, f"{url or self.url}/{path.lstrip('/')}"],
                         stdin=f"Authorization: Bearer {token}\n" if token else None)
        body, _, code = proc.stdout.rpartition("\n")
        return Answer(int(code) if code.isdigit() else 0, proc.returncode, body)

    def token(self) -> str:
        ns, name = PROBE_SA
        try:
            review = self.kube.post(f"/api/v1/namespaces/{ns}/serviceaccounts/{name}/token",
                                    {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                     "spec": {"expirationSeconds": 600}})
        except Exception as exc:  # noqa: BLE001 - any API failure is the same message
            fail(f"The grader could not get a token for ServiceAccount {ns}/{name} from the API server "
                 f"({str(exc).splitlines()[0][:120]}). Look: kubectl get serviceaccount {name} -n {ns}")
        return review["status"]["token"]

    def config_text(self) -> str:
        proc = self._run(NODE, ["head", "-c", str(learner_files.MAX_BYTES + 1), CONF])
        if proc.returncode != 0:
            fail(f"The grader cannot read {CONF} on {NODE}: {(proc.stderr.strip() or 'no output')[:200]}. "
                 f"Look on {NODE}: ls -l {CONF}")
        if len(proc.stdout.encode()) > learner_files.MAX_BYTES:
            fail(f"{CONF} on {NODE} is larger than {learner_files.MAX_BYTES} bytes; a kubelet configuration is a "
                 f"few dozen lines. Look on {NODE}: wc -c {CONF}")
        return proc.stdout

    def config(self) -> dict | None:
        """The file's settings, or None when it does not parse as a mapping."""
        try:
            doc = learner_files.parse_yaml(self.config_text(), CONF)
        except (yaml.YAMLError, learner_files.LearnerFileError):
            return None
        return doc if isinstance(doc, dict) else None

    def running(self) -> dict | None:
        """The settings the running kubelet uses (/configz, as the API server may read it)."""
        answer = self.get("configz", cert=True)
        try:
            return json.loads(answer.body)["kubeletconfig"] if answer.code == 200 else None
        except (ValueError, KeyError, TypeError):
            return None

    def restart_note(self, dotted: str) -> str:
        """When the file already has what the task wants but the running kubelet does not: the
        kubelet reads its file only when it starts."""
        doc, now = self.config(), self.running()
        if doc is None or now is None:
            return ""
        want = SETTINGS[dotted][1]
        in_file, running = effective(doc, dotted), _dig(now, dotted)[1]
        if in_file == want and running is not None and running != want:
            return (f" {CONF} already says {dotted}: {show(want)}, but the running kubelet still has "
                    f"{show(running)}: it reads the file only when it starts ({RESTART}).")
        return ""

    def log_tail(self) -> str:
        """The last error the kubelet logged (a config it could not load, a flag it refused)."""
        proc = self._run(NODE, ["journalctl", "-u", "kubelet", "-n", "40"])
        lines = [ln.strip() for ln in proc.stdout.splitlines() if ln.strip()]
        errors = [ln for ln in lines if any(w in ln.lower() for w in ("error", "failed", "invalid"))]
        last = (errors or lines or ["(empty)"])[-1]
        # klog's line: the reason is its err="..." (the prefix carries a time and a pid).
        if 'err="' in last:
            last = last.split('err="', 1)[1].rsplit('"', 1)[0].replace('\\"', '"')
        return last[:300]


@fixture
def kubelet(cluster, kube, lab):
    """Skip (not available) unless node01 is a real node with a shell: kwok's node01 has no kubelet."""
    if not cluster.offers("node-shell"):
        skip("needs a real node01 with its own kubelet (ckalab up --nodes real, as root)")
    return Kubelet(cluster, kube, lab)


@check(2, f"{NODE}'s kubelet runs and the node is Ready", hint="systemctl status kubelet on node01")
def test_kubelet_running(kubelet):
    answer = kubelet.get("healthz")
    if not answer.code:
        fail(f"{NODE}'s kubelet does not answer on {kubelet.ip}:{PORT} ({answer.said()}): it is not running. "
             f"Its log ends with: {kubelet.log_tail()} Look on {NODE}: systemctl status kubelet; "
             "journalctl -u kubelet -n 30")
    ready = next((c for c in (kubelet.node.get("status") or {}).get("conditions") or [] if c.get("type") == "Ready"), {})
    expect(ready.get("status") == "True",
           f"Node {NODE} is not Ready (Ready={ready.get('status', 'missing')}: {ready.get('message', '')}). "
           f"Look: kubectl describe node {NODE}")


@check(1, f"{CONF} on {NODE} is valid and keeps the settings", hint=f"cat {CONF} on node01")
def test_config_file(kubelet):
    text = kubelet.config_text()
    try:
        doc = learner_files.parse_yaml(text, CONF)
    except yaml.YAMLError as exc:
        fail(f"{learner_files.yaml_error_text(exc, CONF + ' on ' + NODE)} The kubelet cannot start with it. "
             f"Look on {NODE}: cat -A {CONF}")
    except learner_files.LearnerFileError as exc:
        fail(str(exc))
    expect(isinstance(doc, dict) and doc.get("kind") == "KubeletConfiguration",
           f"{CONF} on {NODE} is no KubeletConfiguration (kind: "
           f"{doc.get('kind') if isinstance(doc, dict) else type(doc).__name__}); the kubelet cannot start with it. "
           f"Look on {NODE}: head {CONF}")
    problems = []
    for dotted, (_, want) in SETTINGS.items():
        value = effective(doc, dotted)
        if dotted == "authorization.mode" and value not in MODES:
            problems.append(f"authorization.mode: {value!r} is no mode the kubelet knows ({', '.join(MODES)})")
        elif dotted.endswith(".enabled") and not isinstance(value, bool):
            problems.append(f"{dotted}: {value!r} is no boolean (true or false, unquoted)")
        elif value != want:
            problems.append(f"{dotted}: {show(value)}")
    expect(not problems, f"{CONF} on {NODE} says {'; '.join(problems)}. The kubelet takes its file as it is at its "
           f"next start. {LOOK_FILE}")


@check(3, f"{NODE}'s kubelet refuses a request without credentials (401)", after="test_kubelet_running",
       hint="curl -sk https://NODE01-IP:10250/pods from the controlplane")
def test_anonymous_refused(kubelet, lab):
    path = lab.params["endpoint"]
    answer = kubelet.get(path)
    if answer.code == 401:
        return
    probe = f"an anonymous GET {kubelet.url}/{path}"
    note = kubelet.restart_note("authentication.anonymous.enabled")
    if answer.code == 403:
        fail(f"{NODE}'s kubelet answered {probe} with 403 Forbidden: it let the caller in as system:anonymous and "
             "only its authorization refused it. The task wants such a request refused as unauthenticated (401)."
             f"{note} {LOOK_FILE}")
    if answer.code == 200:
        fail(f"{NODE}'s kubelet answered {probe} with 200 OK: anyone who reaches the node can read it (and with "
             f"the same rights run commands in its pods).{note} {LOOK_FILE}")
    fail(f"{NODE}'s kubelet answered {probe} with {answer.said()}; expected 401 Unauthorized. Look from the "
         f"controlplane: curl -sk {kubelet.url}/{path}")


@check(2, f"{NODE}'s kubelet asks the API server who a token's caller is and what it may do",
       after="test_kubelet_running", hint="authentication.webhook and authorization.mode in the kubelet's file")
def test_token_checked(kubelet, lab):
    path = lab.params["endpoint"]
    ns, name = PROBE_SA
    answer = kubelet.get(path, token=kubelet.token())
    if answer.code == 403:
        return
    who = f"ServiceAccount {ns}/{name}"
    probe = f"GET {kubelet.url}/{path} with a token of {who}"
    if answer.code == 401:
        fail(f"{NODE}'s kubelet refused a {probe} as unauthenticated (401): it does not ask the API server who a "
             "bearer token belongs to, so no ServiceAccount or token user can be allowed on it."
             f"{kubelet.restart_note('authentication.webhook.enabled')} {LOOK_FILE}")
    if answer.code == 200:
        fail(f"{NODE}'s kubelet answered a {probe} with 200 OK, although {who} has no rights on nodes: it does "
             f"not ask the API server whether a caller may do what it asks.{kubelet.restart_note('authorization.mode')}"
             f" Look: kubectl auth can-i get nodes/proxy --as=system:serviceaccount:{ns}:{name}; "
             f"on {NODE}: grep -A3 '^authorization' {CONF}")
    fail(f"{NODE}'s kubelet answered a {probe} with {answer.said()}; expected 403 Forbidden (the caller known, "
         "its request refused).")


@check(2, f"the API server's kubelet client certificate still gets into {NODE}'s kubelet",
       after="test_kubelet_running", hint="authentication.x509.clientCAFile in the kubelet's file")
def test_apiserver_allowed(kubelet, lab):
    path = lab.params["endpoint"]
    answer = kubelet.get(path, cert=True)
    if answer.code == 200:
        return
    probe = f"GET {kubelet.url}/{path} with the API server's client certificate ({CLIENT_CERT[0]})"
    if answer.code == 401:
        fail(f"{NODE}'s kubelet refused a {probe} as unauthenticated (401): it does not accept client certificates "
             "of the cluster CA, so kubectl logs and kubectl exec fail on this node. "
             f"Look on {NODE}: grep -A8 '^authentication' {CONF}; openssl x509 -in {CLIENT_CERT[0]} -noout -issuer "
             "(on the controlplane)")
    if answer.code == 403:
        fail(f"{NODE}'s kubelet refused a {probe} (403 Forbidden): it knows the caller but its authorization does "
             f"not let it in, so kubectl logs and exec fail on this node. Look on {NODE}: grep -A3 '^authorization' "
             f"{CONF}; kubectl auth can-i get nodes/proxy --as=kube-apiserver-kubelet-client")
    fail(f"{NODE}'s kubelet answered a {probe} with {answer.said()}; expected 200 OK.")


@check(1, f"{NODE}'s kubelet read-only port is closed", after="test_kubelet_running",
       hint="readOnlyPort in the kubelet's file")
def test_read_only_port_closed(kubelet, lab):
    port = lab.params["read_only_port"]
    url = f"http://{kubelet.ip}:{port}"
    answer = kubelet.get("pods", url=url)
    if not answer.code and answer.exit == 7:
        return  # refused: nothing listens there
    if answer.code:
        fail(f"{NODE}'s kubelet still serves a read-only port: GET {url}/pods answered {answer.said()} without any "
             f"credentials.{kubelet.restart_note('readOnlyPort')} Look on {NODE}: grep readOnlyPort {CONF}")
    fail(f"A connection to {kubelet.ip}:{port} was not refused ({answer.said()}); with the read-only port closed "
         f"nothing listens there. Look from the controlplane: curl -s {url}/pods")
