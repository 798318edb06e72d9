"""Real nodes (experimental): kubelet + containerd + runc on controlplane and node01 of the
local cluster; the control plane runs as static pods from the controlplane node's manifests.

Skipped unless CKALAB_REAL_NODES=1: they need root, network namespaces, cgroups, Debian's
busybox-static / containernetworking-plugins / libseccomp-dev, and build kubelet, containerd,
runc and crictl the first time (minutes). Run them alone:

    CKALAB_REAL_NODES=1 CKALAB_TEST_HOME=/tmp/ckt-nodes CKALAB_TEST_KEEP=1 \\
        .venv/bin/pytest tests/test_real_nodes.py -x -q

The module switches the test cluster to a real node01 and, at the end, back to kwok nodes;
the last test counts what the node left on this machine.

The clock: a pod with CAP_SYS_TIME must not move this machine's time. The tests first prove,
without setting any clock, that clock_settime is refused inside the pod (clockprobe asks for
CLOCK_MONOTONIC, which only a seccomp filter answers with EPERM); only then do they run
`date -s`, and even that sets the time the pod just read, so a failure of the filter could not
move the clock by more than a second.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ckalab.waiting import WaitTimeout, wait_for
from conftest import switch_for_next

pytestmark = pytest.mark.skipif(
    os.environ.get("CKALAB_REAL_NODES") != "1",
    reason="real nodes are experimental: set CKALAB_REAL_NODES=1 (root, builds kubelet/containerd/runc) to run them")

NS = "real-nodes-test"
CAP_SYS_TIME = 25


def _kubectl(cluster, *args, check=True, timeout=120, input=None):
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    proc = subprocess.run(["kubectl", *args], capture_output=True, text=True, env=env, timeout=timeout,
                          input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
    return proc


def _footprint(nodes) -> dict[str, int]:
    """What a real node leaves on this machine, counted the way an admin would look."""
    tag = nodes.tag
    mounts = Path("/proc/self/mountinfo").read_text()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    ipt = subprocess.run(["iptables-save"], capture_output=True, text=True).stdout
    marked = nodes.processes()
    # This cluster's shims (their -address names the node's socket): other clusters of the
    # machine start and stop their own meanwhile.
    shims = [p for p in os.listdir("/proc") if p.isdigit() and _argv0(p).endswith("containerd-shim-runc-v2")
             and str(nodes.root) in _cmdline(p)]
    cgroups = [(h, n) for h in ("cpu", "memory", "pids", "freezer") for n in ("controlplane", "node01")
               if Path(f"/sys/fs/cgroup/{h}/ckalab-{tag}-{n}").exists()]
    return {
        "processes": sum(len(v) for v in marked.values()),
        "shims": len(shims),
        "mounts": sum(1 for line in mounts.splitlines() if str(nodes.root) in line),
        "links": sum(1 for line in links.splitlines() if tag in line),
        "netns": sum(1 for line in netns.splitlines() if tag in line),
        "iptables_rules": sum(1 for line in ipt.splitlines() if line.startswith("-A")),
        "cgroups": len(cgroups),
        # Left empty (another cluster's containerd may hold them with its own sockets).
        "fixed_dirs": sum(1 for d in nodes_module().FIXED_DIRS if Path(d).is_dir() and not any(Path(d).iterdir())),
    }


def nodes_module():
    from ckalab.cluster import nodes

    return nodes


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _argv0(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except OSError:
        return ""


def _up(cluster, nodes: str) -> None:
    """`ckalab up --nodes <nodes>` on the (already running) test cluster."""
    os.environ["CKALAB_NODES"] = nodes
    try:
        cluster.up(progress=lambda m: print(m, flush=True))
    finally:
        os.environ.pop("CKALAB_NODES")


@pytest.fixture(scope="module")
def real(cluster):
    from ckalab.cluster import nodes

    rn = nodes.for_cluster(cluster)
    _up(cluster, "kwok")  # a real node01 left by an earlier run (kept clusters) goes first
    before = _footprint(rn)
    ports = cluster.load_state()["ports"]
    _up(cluster, "real")
    # A namespace left by an earlier run (kept clusters) goes first, with its pods.
    _kubectl(cluster, "delete", "namespace", NS, "--ignore-not-found", "--timeout=90s", timeout=120)
    _kubectl(cluster, "create", "namespace", NS)
    yield {"cluster": cluster, "nodes": rn, "before": before, "ports": ports}
    _kubectl(cluster, "delete", "namespace", NS, "--wait=false", check=False)
    # Its tests end on kwok nodes; a session on real nodes goes on on them (CI on 707ff42: this
    # worker's later control-plane labs found kwok nodes and failed).
    switch_for_next(cluster, "real" if rn.remembered() else "kwok")


def _pod(cluster, name: str, command: str, security: dict | None = None, pod_security: dict | None = None):
    from ckalab.cluster.nodes import images

    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NS},
        "spec": {
            "nodeName": "node01", "terminationGracePeriodSeconds": 1,
            "securityContext": pod_security or {},
            "containers": [{"name": "main", "image": images.busybox_image(), "imagePullPolicy": "Never",
                            "command": ["sh", "-c", command], "securityContext": security or {}}],
        },
    }
    _kubectl(cluster, "apply", "-f", "-", input=json.dumps(pod))
    _kubectl(cluster, "wait", "-n", NS, f"pod/{name}", "--for=condition=Ready", "--timeout=90s", timeout=120)
    return json.loads(_kubectl(cluster, "get", "-n", NS, "pod", name, "-o", "json").stdout)


def _exec(cluster, pod: str, *cmd: str, check=True):
    return _kubectl(cluster, "exec", "-n", NS, pod, "--", *cmd, check=check)


def test_node01_is_a_real_ready_kubelet(real):
    node = json.loads(_kubectl(real["cluster"], "get", "node", "node01", "-o", "json").stdout)
    assert node["metadata"]["labels"].get("ckalab.io/node") == "real"
    assert "kwok.x-k8s.io/node" not in node["metadata"].get("annotations", {})
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.3"
    kubeadm = nodes_module().ensure_binaries()["kubeadm"]
    assert subprocess.run([str(kubeadm), "version", "-o", "short"], capture_output=True,
                          text=True).stdout.strip() == "v1.36.3"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.2.")
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert addresses["InternalIP"] == real["nodes"].node("node01").ip
    assert not addresses["InternalIP"].startswith("127.")
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready and ready[0]["status"] == "True"


def test_switching_to_real_nodes_keeps_every_address(real):
    """kubeconfigs name the API server's port; kwok (node02) keeps running across the switch and
    its port is its own, not "in use by another process"."""
    assert real["cluster"].load_state()["ports"] == real["ports"]


def test_exec_runs_as_the_pods_user_and_logs_are_read_from_the_node(real):
    c = real["cluster"]
    _pod(c, "whoami", "echo hello from $(hostname); sleep 3600", pod_security={"runAsUser": 1234, "runAsGroup": 1234})
    assert _exec(c, "whoami", "id", "-u").stdout.strip() == "1234"
    logs = _kubectl(c, "logs", "-n", NS, "whoami").stdout
    assert "hello from whoami" in logs


def test_pod_to_pod_tcp_over_the_bridge(real):
    c = real["cluster"]
    server = _pod(c, "web", "mkdir -p /tmp/www && echo pong-from-web > /tmp/www/index.html && "
                            "httpd -f -p 8080 -h /tmp/www")
    _pod(c, "client", "sleep 3600")
    ip = server["status"]["podIP"]
    assert ip.startswith("10.245.")
    # busybox's own timeout: Debian's busybox-static 1.35 wget crashes on -T.
    out = _exec(c, "client", "timeout", "10", "wget", "-q", "-O", "-", f"http://{ip}:8080/").stdout
    assert out.strip() == "pong-from-web"


def test_a_pod_reaches_the_api_server_through_its_service_with_its_own_token(real):
    """kube-proxy in the node's namespace turns 10.96.0.1:443 into the API server's address, and
    the pod's mounted ServiceAccount token really authenticates (and is really authorized):
    kubecall (in our busybox image) is an in-cluster client's one request."""
    c = real["cluster"]
    _pod(c, "caller", "sleep 3600")
    # kube-proxy writes the Service's rules a moment after the node (re)starts: until then refused.
    try:
        wait_for(lambda: _exec(c, "caller", "kubecall", "/version", check=False).stdout.startswith("200\n"), 60,
                 "the kubernetes Service to reach the API server from the pod")
    except WaitTimeout:  # CI saw this once: say what kube-proxy had and what it logged
        node = real["nodes"].node("node01")
        slices = _kubectl(c, "get", "endpointslices", "-n", "default", "-o", "wide", check=False).stdout
        proxy_log = node.p("logs/kube-proxy.log").read_text(errors="replace").splitlines()[-15:]
        called = _exec(c, "caller", "kubecall", "/version", check=False)
        raise AssertionError(f"the pod does not reach the API server through 10.96.0.1:\n{called.stdout}{called.stderr}"
                             f"\nendpoint slices:\n{slices}\nnode01's kube-proxy log:\n" + "\n".join(proxy_log)) from None
    version = _exec(c, "caller", "kubecall", "/version").stdout.split("\n", 1)
    assert version[0] == "200" and json.loads(version[1])["gitVersion"] == "v1.36.3"
    denied = _exec(c, "caller", "kubecall", f"/api/v1/namespaces/{NS}/secrets").stdout
    assert denied.startswith("403\n") and f'system:serviceaccount:{NS}:default' in denied, denied


def test_network_policies_are_enforced_by_kube_router(real):
    """A policy selecting the server allows only the labelled client: the other is refused."""
    c = real["cluster"]
    server = _pod(c, "np-web", "mkdir -p /tmp/www && echo pong > /tmp/www/index.html && httpd -f -p 8080 -h /tmp/www")
    _kubectl(c, "label", "pod", "-n", NS, "np-web", "app=np-web")
    _pod(c, "np-friend", "sleep 3600")
    _kubectl(c, "label", "pod", "-n", NS, "np-friend", "role=friend")
    _pod(c, "np-stranger", "sleep 3600")
    url = f"http://{server['status']['podIP']}:8080/"

    def get(pod):
        return _exec(c, pod, "timeout", "5", "wget", "-q", "-O", "-", url, check=False)

    assert get("np-stranger").stdout.strip() == "pong"  # no policy yet: open
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "np-web", "namespace": NS},
              "spec": {"podSelector": {"matchLabels": {"app": "np-web"}}, "policyTypes": ["Ingress"],
                       "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "friend"}}}],
                                    "ports": [{"port": 8080}]}]}}
    _kubectl(c, "apply", "-f", "-", input=json.dumps(policy))
    wait_for(lambda: get("np-stranger").returncode != 0, 30, "kube-router to block the stranger")
    assert get("np-friend").stdout.strip() == "pong"
    _kubectl(c, "delete", "networkpolicy", "-n", NS, "np-web")
    wait_for(lambda: get("np-stranger").stdout.strip() == "pong", 30, "the stranger to get through again")


def _cap_eff(text: str) -> int:
    return int(re.search(r"^CapEff:\s*([0-9a-f]+)$", text, re.M).group(1), 16)


def test_a_sys_time_pod_keeps_the_capability_but_cannot_set_the_clock(real):
    c = real["cluster"]
    _pod(c, "clock", "sleep 3600", security={"capabilities": {"add": ["SYS_TIME"]}})
    status = _exec(c, "clock", "cat", "/proc/1/status").stdout
    assert _cap_eff(status) & (1 << CAP_SYS_TIME), f"CapEff lacks cap_sys_time:\n{status}"
    assert int(re.search(r"^Seccomp:\s*(\d)", status, re.M).group(1)) == 2  # a filter is in force
    probe = _exec(c, "clock", "clockprobe", check=False)
    assert probe.returncode == 0 and probe.stdout.startswith("blocked"), probe.stdout + probe.stderr
    # Proven blocked without touching a clock: now the learner's command, with the time it reads.
    offset = time.time() - time.monotonic()  # moves only if someone sets the wall clock
    attempt = _exec(c, "clock", "sh", "-c", 'date -s "@$(date +%s)"', check=False)
    # busybox date reports the refusal but exits 0, so the message is what tells.
    assert "can't set date: Operation not permitted" in attempt.stderr, attempt.stdout + attempt.stderr
    assert abs((time.time() - time.monotonic()) - offset) < 0.5


def test_even_a_privileged_unconfined_pod_cannot_reach_the_clock(real):
    """The filter sits under containerd, so no pod setting can lift it (only probed: no date -s)."""
    c = real["cluster"]
    _pod(c, "priv", "sleep 3600", security={"privileged": True, "seccompProfile": {"type": "Unconfined"}})
    probe = _exec(c, "priv", "clockprobe", check=False)
    assert probe.returncode == 0 and probe.stdout.startswith("blocked"), probe.stdout + probe.stderr


def _on_node(cluster, node: str, script: str, check=True) -> subprocess.CompletedProcess:
    """`ckalab ssh NODE -- sh -c SCRIPT`, as a learner would."""
    argv, env = cluster.shell(node, ["sh", "-c", script])
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(f"on {node}: {script!r} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")
    return proc


CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def _mirror_pods(cluster) -> dict[str, dict]:
    pods = json.loads(_kubectl(cluster, "get", "pods", "-n", "kube-system", "-o", "json").stdout)["items"]
    return {p["metadata"]["name"]: p for p in pods}


def _apiserver_command(cluster) -> list[str]:
    return _mirror_pods(cluster)["kube-apiserver-controlplane"]["spec"]["containers"][0]["command"]


def test_the_control_plane_runs_as_static_pods_of_the_controlplane_node(real):
    c = real["cluster"]
    names = [f"{comp}-controlplane" for comp in CONTROL_PLANE]
    wait_for(lambda: all(n in _mirror_pods(c) for n in names), 60, "the four mirror pods")
    pods = _mirror_pods(c)
    for n in names:
        assert pods[n]["spec"]["nodeName"] == "controlplane"
        assert pods[n]["metadata"]["annotations"]["kubernetes.io/config.source"] == "file"
    node = json.loads(_kubectl(c, "get", "node", "controlplane", "-o", "json").stdout)
    assert "node-role.kubernetes.io/control-plane" in node["metadata"]["labels"]
    assert {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"} in node["spec"]["taints"]
    logs = _kubectl(c, "logs", "-n", "kube-system", "kube-apiserver-controlplane").stdout
    assert "Serving securely on" in logs
    assert c.offers("static-pods") and c.offers("node-shell")
    # kwok's node02 takes no pods, so the labs' pods land where containers really run.
    node02 = json.loads(_kubectl(c, "get", "node", "node02", "-o", "json").stdout)
    assert {"key": "ckalab.io/kwok", "value": "true", "effect": "NoSchedule"} in node02["spec"]["taints"]


def test_the_controlplane_shell_has_the_exam_paths_and_tools(real):
    c = real["cluster"]
    out = _on_node(c, "controlplane", "hostname; ls /etc/kubernetes/manifests; ls /etc/kubernetes/pki/ca.crt "
                   "/etc/kubernetes/admin.conf /var/lib/kubelet/config.yaml; crictl ps --name kube-apiserver -q | wc -l; "
                   "kubectl get node controlplane -o name").stdout.split()
    assert out[0] == "controlplane"
    assert {f"{comp}.yaml" for comp in CONTROL_PLANE} <= set(out)
    assert "/var/lib/kubelet/config.yaml" in out and "node/controlplane" in out
    etcd = c.manifest("etcd")["spec"]["containers"][0]["command"]
    endpoint = next(a.split("=", 1)[1] for a in etcd if a.startswith("--listen-client-urls="))
    health = _on_node(c, "controlplane", f"etcdctl --endpoints={endpoint} --cacert=/etc/kubernetes/pki/etcd/ca.crt "
                      "--cert=/etc/kubernetes/pki/etcd/server.crt --key=/etc/kubernetes/pki/etcd/server.key "
                      "endpoint health 2>&1")
    assert "is healthy" in health.stdout
    # The node's shell is under the clock filter too (only probed by a refused call: see noclock).
    offset = time.time() - time.monotonic()
    refused = _on_node(c, "controlplane", 'date -s "@$(date +%s)"', check=False)
    assert "Operation not permitted" in refused.stderr and abs((time.time() - time.monotonic()) - offset) < 0.5


def test_node_file_reads_the_paths_the_manifests_name(real):
    """`ckalab node-file` takes the node's paths, as the manifests of real nodes name them: under
    /etc/kubernetes from the cluster's files, elsewhere through the controlplane's shell."""
    c = real["cluster"]
    ckalab = str(Path(sys.executable).parent / "ckalab")

    def node_file(path):
        return subprocess.run([ckalab, "node-file", path, "--name", c.name], capture_output=True, timeout=60)

    cert = c.component_flags("kube-apiserver")["tls-cert-file"]
    assert cert == "/etc/kubernetes/pki/apiserver.crt"
    assert node_file(cert).stdout == (Path(c.pki_dir) / "apiserver.crt").read_bytes()
    assert node_file("/var/lib/kubelet/config.yaml").stdout == _on_node(
        c, "controlplane", "cat /var/lib/kubelet/config.yaml").stdout.encode()
    missing = node_file("/var/lib/kubelet/nope.yaml")
    assert missing.returncode == 2 and missing.stderr.decode().strip() == (
        "error: Cannot read /var/lib/kubelet/nope.yaml on the controlplane node: no such file")


def test_an_edited_manifest_restarts_the_api_server_and_up_keeps_it(real):
    c = real["cluster"]
    path = c.etc / "manifests" / "kube-apiserver.yaml"
    text = path.read_text()
    assert "--profiling=false" not in text
    path.write_text(text.replace("    - --allow-privileged=true\n", "    - --allow-privileged=true\n    - --profiling=false\n"))
    wait_for(lambda: c._readyz() and "--profiling=false" in _apiserver_command(c), 120,
             "the API server to run with the edited manifest")
    said = []
    c.up(progress=said.append)  # `ckalab up` never overwrites a learner's edit
    assert "--profiling=false" in path.read_text()
    assert any("keeping your edited" in m and "kube-apiserver.yaml" in m for m in said), said
    done = c.restore_manifests()
    assert len(done) == 1 and "your version is kept in" in done[0]
    aside = Path(done[0].rsplit(" ", 1)[1])
    assert "--profiling=false" in aside.read_text() and aside.parent.name == "manifests.edited"
    assert path.read_text() == text
    wait_for(lambda: c._readyz() and "--profiling=false" not in _apiserver_command(c), 120,
             "the API server back on ckalab's manifest")


def test_a_broken_manifest_keeps_the_api_server_down_and_says_why(real):
    from ckalab.errors import CkalabError

    c = real["cluster"]
    path = c.etc / "manifests" / "kube-apiserver.yaml"
    text = path.read_text()
    path.write_text(text.replace("--tls-cert-file=/etc/kubernetes/pki/apiserver.crt",
                                 "--tls-cert-file=/etc/kubernetes/pki/apiserver-new.crt"))
    try:
        wait_for(lambda: not c._readyz(), 60, "the API server to go down")

        def exited_and_why():
            # One snapshot shows both: the kubelet retries a crash-looping container, so between
            # two reads it may be briefly "running" again (seen on a loaded CI worker).
            st = c.status()
            apiserver = next(x for x in st.components if x.name.startswith("kube-apiserver"))
            return st if apiserver.state == "exited" and "apiserver-new.crt: no such file" in st.render() else None

        st = wait_for(exited_and_why, 90, "status to show the API server exited and why")
        assert st.state == "degraded"
        with pytest.raises(CkalabError) as err:
            c.up(progress=lambda m: None)
        assert "the API server did not become ready (its container keeps exiting)" in str(err.value)
        assert "restore-manifests" in str(err.value)
    finally:
        c.restore_manifests()
    wait_for(c._readyz, 120, "the API server after restore-manifests")


def test_restoring_the_control_plane_waits_for_the_restored_command_and_restores_kubelet_configs(real):
    """A lab's reset right after an edit that still serves (/readyz answers from the edited API
    server until the kubelet replaces it): restore_control_plane returns only once the container
    runs the restored manifest's command line. node01's edited kubelet config comes back too (kept
    aside), and that kubelet is restarted with it."""
    from ckalab import labs

    c = real["cluster"]
    path = c.etc / "manifests" / "kube-apiserver.yaml"
    text = path.read_text()
    path.write_text(text.replace("    - --allow-privileged=true\n", "    - --allow-privileged=true\n    - --profiling=false\n"))
    wait_for(lambda: c._readyz() and "--profiling=false" in _apiserver_command(c), 120,
             "the API server to run with the edited manifest")
    node01 = real["nodes"].node("node01")
    config = node01.p("var/lib/kubelet/config.yaml")
    ours = config.read_text()
    config.write_text(ours.replace("maxPods: 30", "maxPods: 31"))
    before = real["nodes"].processes()
    watchers = [f"{n}/{w}" for n in ("controlplane", "node01") for w in ("kube-proxy", "kube-router")]
    assert all(before.get(w) for w in watchers), before
    done = labs.restore_control_plane(c)
    # What the runtime runs (the mirror pod in the API follows a moment later).
    running = real["nodes"].control_plane.running_command("kube-apiserver")
    assert running and "--profiling=false" not in running and c.runs_manifest("kube-apiserver")
    assert c.status().state == "running" and path.read_text() == text
    assert config.read_text() == ours
    said = [d for d in done if d.startswith("node01: /var/lib/kubelet/config.yaml restored; your version is kept in ")]
    assert len(said) == 1 and "maxPods: 31" in Path(said[0].rsplit(" ", 1)[1]).read_text(), done
    after = real["nodes"].processes()
    assert set(after["node01/kubelet"]).isdisjoint(before["node01/kubelet"])
    # The API server was replaced: every node's kube-proxy and kube-router are to watch it afresh
    # rather than from client-go's back-off, once the next lab that is no control-plane lab starts.
    assert all(after.get(w) == before[w] for w in watchers), (before, after)
    assert labs.restore_control_plane(c) == []  # nothing left to restore: returns at once
    labs.start(labs.load("rbac-role"), c)
    started = real["nodes"].processes()
    for w in watchers:
        assert started.get(w) and set(started[w]).isdisjoint(before[w]), (w, before.get(w), started.get(w))
    assert labs.refresh_watchers(c) is False  # restarted once, not by every lab after
    assert real["nodes"].processes().get("node01/kube-router") == started["node01/kube-router"]


def test_ckalabs_manifest_write_waits_until_the_kubelet_frees_the_static_pods_name(real, monkeypatch):
    """write_manifests removes the old manifest and writes the new one once the kubelet has
    forgotten the old pod (else the new one waits out a 10-15 s back-off). That moment is read
    from the kubelet's working-pods gauge: no more desired static pods than manifests left, and
    none orphaned; the fixed housekeeping wait is only the fallback when it cannot be read."""
    from ckalab.cluster import nodes as nodes_mod

    c = real["cluster"]
    cp = real["nodes"].control_plane
    reads: list = []
    read = nodes_mod.Node.static_pod_workers
    monkeypatch.setattr(nodes_mod.Node, "static_pod_workers", lambda self: reads.append(read(self)) or reads[-1])
    path = c.etc / "manifests" / "kube-scheduler.yaml"
    ours = path.read_bytes()
    pod = yaml.safe_load(ours)
    pod["metadata"].setdefault("annotations", {})["ckalab.io/test-revision"] = "1"
    try:
        c.write_manifests({path: yaml.safe_dump(pod, sort_keys=False).encode()})
        # released by the gauge (three desired: etcd, API server, controller manager; none
        # orphaned), not by the fallback's timer
        assert reads and reads[-1] == (3, 0), reads
        wait_for(lambda: c.runs_manifest("kube-scheduler"), 60, "the new kube-scheduler container")
    finally:
        c.write_manifests({path: ours})
    wait_for(lambda: c.runs_manifest("kube-scheduler"), 60, "ckalab's kube-scheduler container again")
    assert cp.static_pod_workers()[1] == 0


def test_the_kubelet_restarts_the_way_the_exam_does_it(real):
    """`systemctl restart kubelet` on the node. After the static pod tests: a static pod's
    manifest edited in the first minutes of a new kubelet can wait two minutes for its volumes
    (the new kubelet first finishes with the pod the old one ran), as on any kubeadm node."""
    c = real["cluster"]
    before = real["nodes"].processes()["controlplane/kubelet"]
    _on_node(c, "controlplane", "systemctl restart kubelet && systemctl is-active kubelet")
    after = real["nodes"].processes()["controlplane/kubelet"]
    assert after and set(after).isdisjoint(before)
    # The new kubelet answers its health endpoint on the node (as `curl localhost:10248/healthz`
    # does on a kubeadm node); the Node's heartbeat moves only every few minutes.
    wait_for(lambda: _on_node(c, "controlplane", "curl -s http://127.0.0.1:10248/healthz", check=False).stdout
             == "ok", 60, "the restarted kubelet's healthz")
    status = _on_node(c, "controlplane", "systemctl status kubelet").stdout
    assert "Active: active (running)" in status


def test_a_kube_proxy_that_writes_no_rules_is_restarted_by_the_wait(real):
    """`up`'s wait for kube-proxy's rules restarts a kube-proxy that has written none after half
    its time (one that lived through a lab's broken API server sat in its watches' back-off for
    over a minute, CI on f3a8e44). Here: the node's kube-proxy stopped (SIGSTOP) and its nat
    rules flushed; the wait ends with a new kube-proxy that wrote them."""
    import signal

    node = real["nodes"].control_plane
    old = real["nodes"].processes()["controlplane/kube-proxy"]
    assert old
    for pid in old:
        os.kill(pid, signal.SIGSTOP)
    try:
        _on_node(real["cluster"], "controlplane", "iptables -t nat -F")  # every chain's rules: kube-proxy's
        nat = _on_node(real["cluster"], "controlplane", "iptables-save -t nat").stdout
        assert not [line for line in nat.splitlines() if "-d 10.96.0.1/32" in line and "KUBE-SVC-" in line]
        node.wait_kube_proxy(timeout=20)
    finally:
        for pid in old:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    new = real["nodes"].processes()["controlplane/kube-proxy"]
    assert new and set(new).isdisjoint(old)
    nat = _on_node(real["cluster"], "controlplane", "iptables-save -t nat").stdout
    assert [line for line in nat.splitlines() if "-d 10.96.0.1/32" in line and "KUBE-SVC-" in line]


def test_down_removes_every_process_mount_link_namespace_and_rule(real):
    c, rn = real["cluster"], real["nodes"]
    during = _footprint(rn)
    assert during["processes"] >= 7 and during["shims"] >= 5 and during["links"] >= 3
    assert during["netns"] == 2 and during["mounts"] >= 2 and during["cgroups"] >= 8
    c.down(progress=lambda m: print(m, flush=True))  # `ckalab down`: the whole cluster stops
    after = _footprint(rn)
    assert after == real["before"], f"before {real['before']}, during {during}, after ckalab down {after}"
    c.up(progress=lambda m: print(m, flush=True))  # a plain `ckalab up` brings the real node back
    assert real["nodes"].enabled() and _footprint(rn)["netns"] == 2
    # The new kubelet runs the pod again (its status may still show the old run for a moment).
    wait_for(lambda: _exec(c, "whoami", "id", "-u", check=False).stdout.strip() == "1234", 60,
             "pod whoami to run again on the restarted node")
    _up(c, "kwok")  # back to the default cluster for the other tests
    after = _footprint(rn)
    assert after == real["before"], f"before {real['before']}, during {during}, after --nodes kwok {after}"
    node = json.loads(_kubectl(c, "get", "node", "node01", "-o", "json").stdout)
    assert node["metadata"]["annotations"].get("kwok.x-k8s.io/node") == "fake"


def test_a_node_that_cannot_start_is_removed_and_kwok_comes_back(real, monkeypatch):
    from ckalab.cluster import nodes
    from ckalab.errors import CkalabError

    c, rn = real["cluster"], real["nodes"]
    flags = nodes.Node._kubelet_flags
    monkeypatch.setattr(nodes.Node, "_kubelet_flags",
                        lambda self: [*flags(self), "--no-such-flag"] if self.name == "node01" else flags(self))
    with pytest.raises(CkalabError) as err:
        _up(c, "real")
    assert "Real node node01: kubelet exited while waiting for node node01 to be Ready" in str(err.value)
    assert "unknown flag: --no-such-flag" in str(err.value)  # the log tail says why
    assert _footprint(rn) == real["before"]
    node = json.loads(_kubectl(c, "get", "node", "node01", "-o", "json").stdout)
    assert node["metadata"]["annotations"].get("kwok.x-k8s.io/node") == "fake"
    assert not rn.enabled()


def test_the_clock_filter_covers_the_32_bit_abis_too():
    """A 32-bit binary in a container must not be a way around the filter: libseccomp's own
    rendering of it refuses the clock calls by their i386 (stime 25, settimeofday 79) and x32
    (0x40000000 + the x86_64 number) numbers as well."""
    from ckalab.cluster.nodes import noclock

    text = noclock.pfc()
    sections = dict(re.findall(r"# filter for arch (\S+) \(\d+\)\n(.*?)action ALLOW;", text, re.S))
    assert set(sections) == {"x86_64", "x86", "x32"}
    for arch, numbers in {"x86_64": (164, 227, 159, 305), "x86": (25, 79, 264, 124, 343, 404, 405),
                          "x32": (0x40000000 + 164, 0x40000000 + 227, 0x40000000 + 159)}.items():
        for nr in numbers:
            assert f"if ($syscall == {nr})\n    action ERRNO(1);" in sections[arch], (arch, nr)


def test_kube_routers_sync_requests_come_one_per_burst():
    """Our kube-router build asks its policy controller for one iptables sync per burst of the
    changes upstream syncs for (Go tests of gomod/kube-router/kube-router), not one per change."""
    from ckalab.cluster.local import build

    # The build's flags (build_group: -trimpath, no cgo), so the packages it compiled come from
    # Go's build cache: with go's defaults they were compiled again, 520 compiler runs and 3.5
    # CPU-minutes of a test run on this 2-core machine. No vet either (`go test` vets by default,
    # which analyses every dependency first): these tests assert behaviour, not lint.
    proc = subprocess.run(["go", "test", "-vet=off", "-trimpath", "-count=1", "-v", "./kube-router"],
                          cwd=build.GOMOD / "kube-router",
                          env=dict(os.environ, CGO_ENABLED="0", GOFLAGS="-mod=readonly -buildvcs=false"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for name in ("TestPodChangedFollowsUpstreamsRelevance", "TestNamespaceChangedOnlyForLabels",
                 "TestABurstOfChangesAsksForOneSync"):
        assert f"--- PASS: {name}" in proc.stdout
