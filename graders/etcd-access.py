"""Grader for etcd-access: the value only etcdctl can show, the Secret's etcd key, why etcd wants
client certificates, and etcd really refusing a request that carries none.

The grader talks to etcd itself, from the controlplane node (cluster.shell): with the API
server's etcd client certificate to learn the true value, and with no certificate at all to
prove etcd refuses strangers. Every etcdctl call is bounded, so a stopped etcd gives a message,
never a hanging check.
"""

import subprocess

from ckalab import learner_files
from ckalab.grading import check, expect, fail, fixture, skip

PKI = "/etc/kubernetes/pki"
PREFIX = "/ckalab/etcd-access/"
ANSWER = "b"
# Why each wrong statement is wrong, without naming the right one.
WRONG = {
    "a": "certificates on a connection do not encrypt the files etcd writes; that is encryption at rest, "
         "a different setting",
    "c": "users never reach etcd: kubectl talks to the API server, and only the API server talks to etcd",
    "d": "TLS works without client certificates (a browser has none); a client certificate is there to say "
         "who the client is",
}


class Etcd:
    """etcdctl on the controlplane node, against the address etcd's manifest names."""

    def __init__(self, cluster):
        self.cluster = cluster
        urls = cluster.component_flags("etcd").get("listen-client-urls") or ""
        self.url = next((u for u in urls.split(",") if u.startswith("https://")), urls.split(",")[0])

    def run(self, *args: str, client_cert: bool = True) -> subprocess.CompletedProcess:
        auth = [f"--cert={PKI}/apiserver-etcd-client.crt", f"--key={PKI}/apiserver-etcd-client.key"] if client_cert else []
        argv, env = self.cluster.shell("controlplane", [
            "etcdctl", f"--endpoints={self.url}", f"--cacert={PKI}/etcd/ca.crt", *auth,
            "--dial-timeout=2s", "--command-timeout=3s", *args])
        try:
            return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 124, "", "etcdctl did not finish within 20 s")


def _why_not(proc: subprocess.CompletedProcess) -> str:
    """etcdctl's reason in one line: the gRPC error's description when there is one."""
    text = proc.stderr.strip()
    if "desc = " in text:
        return text.rsplit("desc = ", 1)[-1].split("\n")[0].replace('\\"', '"').rstrip('"}')[:200]
    return text.splitlines()[-1][:200] if text else f"exit {proc.returncode}"


@fixture
def etcd(cluster):
    """Skip (not available) unless the controlplane is a node with a shell: on kwok nodes etcd is
    a process of this machine and there is no node to run etcdctl on."""
    if not (cluster.offers("node-shell") and cluster.offers("static-pods")):
        skip("needs a controlplane node with a shell (ckalab up --nodes real, as root)")
    return Etcd(cluster)


def _answer(lab, name: str) -> str:
    path = lab.workdir / name
    if not path.exists():
        fail(f"{name} not found in {lab.workdir}: the answer goes there, under that name. Look: ls {lab.workdir}")
    try:
        return learner_files.read_text(path, max_bytes=4096).strip()
    except learner_files.LearnerFileError as exc:
        fail(str(exc))


@check(3, "etcd-value.txt holds the value stored under /ckalab/", hint="etcdctl ... get --prefix /ckalab/")
def test_value(etcd, lab):
    got = _answer(lab, "etcd-value.txt")
    proc = etcd.run("get", "--prefix", PREFIX, "--print-value-only")
    expect(proc.returncode == 0, f"The grader cannot read etcd at {etcd.url} with the API server's client "
           f"certificate: {_why_not(proc)}. Is etcd running? Look on the node: crictl ps -a --name etcd")
    values = [v for v in proc.stdout.splitlines() if v.strip()]
    expect(values, f"Nothing is stored under {PREFIX} in etcd any more, so there is nothing to compare with; "
           "'ckalab reset etcd-access' writes a new value.")
    expect(got, f"etcd-value.txt is empty; it should hold the value stored under /ckalab/ in etcd.")
    if got in values:
        return
    keys = etcd.run("get", "--prefix", PREFIX, "--keys-only").stdout.split()
    if got.rstrip("/") in keys or got.startswith("/"):
        fail(f"etcd-value.txt holds '{got[:80]}', which looks like a key; the task asks for the value stored "
             "under it. Look at what etcdctl ... get KEY prints: the key's line, then its value.")
    fail(f"etcd-value.txt holds '{got[:80]}', which is not the value stored under /ckalab/ in etcd. "
         "Look: etcdctl ... get --prefix /ckalab/")


@check(2, "secret-key.txt holds the Secret's etcd key", hint="etcdctl ... get --prefix --keys-only /registry/")
def test_secret_key(kube, lab):
    p = lab.params
    expect(kube.get("v1", "Secret", p["secret"], p["namespace"]),
           f"Secret '{p['secret']}' not found in namespace '{p['namespace']}' (kubectl get secrets -n "
           f"{p['namespace']}); 'ckalab reset etcd-access' creates it again.")
    got = _answer(lab, "secret-key.txt")
    want = f"/registry/secrets/{p['namespace']}/{p['secret']}"
    if got == want:
        return
    expect(got.startswith("/registry/"), f"secret-key.txt holds '{got[:120]}'; the API server keeps every object "
           "under the prefix /registry/ in etcd. Look: etcdctl ... get --prefix --keys-only /registry/ | grep "
           f"{p['secret']}")
    fail(f"secret-key.txt holds '{got[:120]}', which is not the key of Secret '{p['secret']}' in namespace "
         f"'{p['namespace']}'. Look: etcdctl ... get --prefix --keys-only /registry/secrets/{p['namespace']}")


@check(2, "why.txt: why etcd requires client certificates", hint="Which statement says what etcd stores and who checks requests to it?")
def test_why(lab):
    got = _answer(lab, "why.txt").lower().strip(" .)(")
    expect(got in ("a", "b", "c", "d"), f"why.txt holds '{got[:40]}'; expected one letter, a, b, c or d.")
    expect(got == ANSWER, f"why.txt answers '{got}', but {WRONG.get(got, '')}. Read the statements in the task again.")


@check(2, "etcd refuses a request without a client certificate",
       hint="grep client-cert-auth /etc/kubernetes/manifests/etcd.yaml on the controlplane node")
def test_anonymous_refused(etcd, cluster):
    flags = cluster.component_flags("etcd")
    proc = etcd.run("get", "--prefix", "--keys-only", "/registry/secrets/", client_cert=False)
    reason = _why_not(proc)
    if proc.returncode == 0:
        fail(f"etcd at {etcd.url} answered a request that carried no client certificate: anyone on the node could "
             f"read every Secret, bypassing the API server. etcd's manifest has --client-cert-auth="
             f"{flags.get('client-cert-auth', '(not set)')} and --trusted-ca-file={flags.get('trusted-ca-file') or '(not set)'}"
             ". Look: grep -e client-cert-auth -e trusted-ca-file "
             "/etc/kubernetes/manifests/etcd.yaml")
    # etcd ends the TLS handshake of a client without a certificate; depending on timing etcdctl
    # sees the alert itself or only the closed connection (TLS 1.3 finishes the client side first).
    refused = ("certificate required", "bad certificate", "handshake failure", "broken pipe",
               "connection reset by peer")
    expect(any(r in proc.stderr for r in refused),
           f"A request to etcd at {etcd.url} without a client certificate failed, but not because etcd asked for "
           f"a certificate: {reason}. Is etcd running? Look on the node: crictl ps -a --name etcd")
