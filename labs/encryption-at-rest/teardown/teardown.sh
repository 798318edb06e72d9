# Undo for encryption-at-rest what restoring ckalab's manifest cannot: values in etcd encrypted
# with the learner's key. ckalab's API server has no encryption config, so it could read none of
# them (kube-system's included, if the learner rewrote every Secret). While the learner's keys are
# at hand, run the API server once more with identity FIRST and the learner's providers after it
# (it reads the encrypted values and writes plain ones), replace every object stored encrypted,
# then give the node ckalab's manifest back. Nothing encrypted: nothing happens (one etcd read).
python - "{{ namespace }}" "{{ config }}" <<'PY'
import base64
import json
import os
import posixpath
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ckalab.cluster import get_cluster
from ckalab.kube import Kube
from ckalab.waiting import WaitTimeout, wait_for

LAB_NS, TASK_CONFIG = sys.argv[1:]
PKI = "/etc/kubernetes/pki"
cluster = get_cluster(os.environ["CKALAB_CLUSTER"])
if not (cluster.offers("static-pods") and cluster.offers("node-shell")):
    sys.exit(0)  # no node, no etcd of its own to clean
MANIFEST = cluster.etc / "manifests" / "kube-apiserver.yaml"
ORIGINAL = cluster.dir / "manifests.orig" / "kube-apiserver.yaml"
WORK = cluster.etc / "ckalab-teardown"  # the node's /etc/kubernetes/ckalab-teardown


def node(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
    args, env = cluster.shell("controlplane", list(argv))
    return subprocess.run(args, env=env, capture_output=True, timeout=timeout)


def etcdctl(*args: str) -> subprocess.CompletedProcess:
    urls = cluster.component_flags("etcd").get("listen-client-urls", "")
    url = next((u for u in urls.split(",") if u.startswith("https://")), urls.split(",")[0])
    return node("etcdctl", f"--endpoints={url}", f"--cacert={PKI}/etcd/ca.crt",
                f"--cert={PKI}/apiserver-etcd-client.crt", f"--key={PKI}/apiserver-etcd-client.key",
                "--dial-timeout=3s", "--command-timeout=30s", *args)


def encrypted() -> list[str]:
    proc = etcdctl("get", "--prefix", "/registry/", "-w", "json")
    if proc.returncode:
        sys.exit(f"encryption-at-rest teardown: cannot read etcd: {proc.stderr.decode()[-300:]}")
    kvs = json.loads(proc.stdout).get("kvs") or []
    return [base64.b64decode(kv["key"]).decode() for kv in kvs
            if base64.b64decode(kv.get("value", "")).startswith(b"k8s:enc:")]


def running_id() -> str:
    proc = node("crictl", "ps", "--name", "kube-apiserver", "--state", "running", "-q")
    return proc.stdout.decode().split("\n")[0].strip()


def install(text: str, what: str) -> None:
    """Write the API server's manifest (the old pod stopped first: the quick way to a restart)
    and wait for it to serve."""
    before = running_id()
    cluster.write_manifests({MANIFEST: text.encode()})
    kube = Kube(cluster.kubeconfig, timeout=2)

    def serves() -> bool:  # a new container, answering (still starting: an exception, "not yet")
        now = running_id()
        return bool(now and now != before and kube.request("GET", "/api/v1/namespaces/default") is not None)
    try:
        wait_for(serves, 180, "the API server")
    except WaitTimeout:
        sys.exit(f"encryption-at-rest teardown: the API server did not come back {what} within 180 s (ckalab status).")


def learner_config() -> dict | None:
    """The encryption config the learner's manifest names (through its hostPath volume), else the
    one at the task's path."""
    paths = []
    try:
        pod = yaml.safe_load(MANIFEST.read_text())
        c = pod["spec"]["containers"][0]
        flag = [a.split("=", 1)[1] for a in c.get("command", []) + c.get("args", [])
                if str(a).startswith("--encryption-provider-config=")]
        vols = {v["name"]: (v.get("hostPath") or {}).get("path") for v in pod["spec"].get("volumes") or []}
        if flag:
            for m in sorted(c.get("volumeMounts") or [], key=lambda m: -len(m["mountPath"])):
                mp = m["mountPath"].rstrip("/")
                if vols.get(m["name"]) and (flag[-1] == mp or flag[-1].startswith(mp + "/")):
                    paths.append(posixpath.normpath(vols[m["name"]] + flag[-1][len(mp):]))
                    break
    except Exception:  # noqa: BLE001 - an unreadable manifest: fall back to the task's path
        pass
    for path in paths + [TASK_CONFIG]:
        proc = node("cat", path)
        try:
            data = yaml.safe_load(proc.stdout) if proc.returncode == 0 else None
        except yaml.YAMLError:
            continue
        if isinstance(data, dict) and data.get("kind") == "EncryptionConfiguration":
            return data
    return None


def kubectl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["kubectl", *args], input=stdin, capture_output=True, timeout=120)


def rewrite(keys: list[str]) -> None:
    """Replace every object of each (resource, namespace) holding an encrypted value."""
    groups = set()
    for key in keys:
        parts = key.split("/")[2:]
        if "." in parts[0] and len(parts) > 2:  # /registry/<group>/<resource>/...
            parts = [f"{parts[1]}.{parts[0]}"] + parts[2:]
        groups.add((parts[0], parts[1] if len(parts) == 3 else None))
    for resource, ns in sorted(groups, key=str):
        where = ["-n", ns] if ns else []
        got = kubectl("get", resource, *where, "-o", "json")
        if got.returncode == 0:
            kubectl("replace", "-f", "-", stdin=got.stdout)


keys = encrypted()
if not keys:
    sys.exit(0)
print(f"{len(keys)} values in etcd are encrypted: writing them back in plain form.")
config = learner_config()
if config:
    for entry in config.get("resources") or []:
        providers = [p for p in entry.get("providers") or [] if "identity" not in p]
        entry["providers"] = [{"identity": {}}] + providers
    WORK.mkdir(mode=0o700, exist_ok=True)
    (WORK / "encryption.yaml").write_text(yaml.safe_dump(config))
    if MANIFEST.exists() and MANIFEST.read_bytes() != ORIGINAL.read_bytes():  # the learner's: kept aside
        aside = cluster.dir / "manifests.edited"
        aside.mkdir(exist_ok=True)
        shutil.copy(MANIFEST, aside / f"kube-apiserver.{time.strftime('%Y%m%d-%H%M%S')}.yaml")
    pod = yaml.safe_load(ORIGINAL.read_text())
    # the kubelet restarts the API server only for a changed manifest: make this one differ
    pod["metadata"].setdefault("annotations", {})["ckalab.io/teardown"] = str(time.time())
    c = pod["spec"]["containers"][0]
    c["command"].append("--encryption-provider-config=/etc/kubernetes/ckalab-teardown/encryption.yaml")
    c["volumeMounts"].append({"name": "ckalab-teardown", "mountPath": "/etc/kubernetes/ckalab-teardown",
                              "readOnly": True})
    pod["spec"]["volumes"].append({"name": "ckalab-teardown", "hostPath": {
        "path": "/etc/kubernetes/ckalab-teardown", "type": "Directory"}})
    install(yaml.safe_dump(pod, sort_keys=False), "with identity first")
    rewrite(keys)
    keys = encrypted()
# What no key here can decrypt: the lab's own namespace's Secrets go (setup writes them again);
# anything else is left for a person to decide, and said.
lab_prefix = f"/registry/secrets/{LAB_NS}/"
for key in [k for k in keys if k.startswith(lab_prefix)]:
    etcdctl("del", key)
left = [k for k in keys if not k.startswith(lab_prefix)]
if config:
    install(ORIGINAL.read_text(), "with ckalab's manifest")
    shutil.rmtree(WORK, ignore_errors=True)  # it held a copy of the learner's keys
if left:
    sys.exit(f"encryption-at-rest teardown: {len(left)} values in etcd stay encrypted with a key that is no "
             f"longer at hand, e.g. {', '.join(left[:3])}. Put back the EncryptionConfiguration that "
             "encrypted them, point the API server at it, and run the reset again.")
print("Every value in etcd is plain again.")
PY
