"""The local cluster is a real, kubeadm-like control plane: TLS, client-cert authn, RBAC, CSR signing."""

import base64
import json
import ssl
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from ckalab import labs, pki
from ckalab.cluster import get_cluster
from ckalab.errors import ClusterNotRunning
from ckalab.kube import Kube
from ckalab.waiting import wait_for


def _write_kubeconfig(cluster, tmp_path, name, key, cert) -> Path:
    from ckalab.cluster.local.pki import kubeconfig_dict

    server = cluster.status().server
    data = kubeconfig_dict(server, Path(cluster.pki_dir, "ca.crt").read_bytes(), name,
                           pki.cert_pem(cert), pki.key_pem(key))
    path = tmp_path / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump(data))
    return path


def test_admin_kubeconfig_authenticates_as_kubeadm_admin(kube):
    me = kube.whoami()
    assert me["username"] == "kubernetes-admin"
    assert "kubeadm:cluster-admins" in me["groups"]


def test_client_certificate_authenticates_and_rbac_denies(cluster, tmp_path):
    d = Path(cluster.pki_dir)
    key, cert = pki.sign(pki.load_key(d / "ca.key"), pki.load_cert(d / "ca.crt"), "alice", orgs=("devs",))
    alice = Kube(_write_kubeconfig(cluster, tmp_path, "alice", key, cert))
    me = alice.whoami()
    assert me["username"] == "alice" and "devs" in me["groups"]
    with pytest.raises(ApiException) as exc:
        alice.core.list_namespaced_pod("default")
    assert exc.value.status == 403


def test_certificate_from_unknown_ca_is_rejected(cluster, tmp_path):
    other_key, other_ca = pki.make_ca("not-the-cluster-ca")
    key, cert = pki.sign(other_key, other_ca, "mallory", orgs=("system:masters",))
    mallory = Kube(_write_kubeconfig(cluster, tmp_path, "mallory", key, cert))
    with pytest.raises(ApiException) as exc:
        mallory.core.list_namespaced_pod("default")
    assert exc.value.status == 401


def test_unauthenticated_request_is_denied(cluster):
    ctx = ssl.create_default_context(cafile=str(Path(cluster.pki_dir) / "ca.crt"))
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{cluster.status().server}/api/v1/namespaces/default/secrets", context=ctx, timeout=5)
    assert exc.value.code == 403
    assert "system:anonymous" in json.loads(exc.value.read())["message"]


def test_api_server_serves_cert_for_kubernetes_names(cluster):
    ctx = ssl.create_default_context(cafile=str(Path(cluster.pki_dir) / "ca.crt"))
    # The apiserver cert is valid for 127.0.0.1 (the advertise address) and verifies against the CA.
    with urllib.request.urlopen(f"{cluster.status().server}/version", context=ctx, timeout=5) as r:
        assert json.loads(r.read())["gitVersion"] == "v1.36.3"


def test_approved_csr_is_signed_by_the_cluster_ca(cluster, kube, tmp_path):
    key = pki.new_key()
    request = base64.b64encode(pki.csr_pem(pki.make_csr(key, "bob", ("qa",)))).decode()
    name = f"bob-{int(time.time() * 1000)}"
    kube.certs.create_certificate_signing_request(client.V1CertificateSigningRequest(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1CertificateSigningRequestSpec(
            request=request, signer_name="kubernetes.io/kube-apiserver-client", usages=["client auth"])))
    try:
        csr = kube.certs.read_certificate_signing_request(name)
        csr.status.conditions = [client.V1CertificateSigningRequestCondition(
            type="Approved", status="True", reason="Test", message="approved by the test")]
        kube.certs.replace_certificate_signing_request_approval(name, csr)
        issued = wait_for(lambda: kube.certs.read_certificate_signing_request(name).status.certificate, 30,
                          "the controller manager to sign the CSR")
        cert = pki.load_cert(base64.b64decode(issued))
        assert pki.describe(cert).subject_cn == "bob"
        assert pki.signed_by(cert, pki.load_cert(Path(cluster.pki_dir) / "ca.crt"))
        assert Kube(_write_kubeconfig(cluster, tmp_path, "bob", key, cert)).whoami()["username"] == "bob"
    finally:
        kube.certs.delete_certificate_signing_request(name)


def test_delete_gives_a_pod_the_grace_period_asked_for(kube):
    """labs.reset deletes a lab's pods with a 1 s grace period (kubectl delete --grace-period=1): a
    `sleep` as PID 1 ignores SIGTERM and would hold reset for its 30 s. A finalizer keeps the pod
    readable while it terminates, bound to a node nobody runs (a kubelet or kwok would end it at
    once; an unbound pod is deleted without a grace period)."""
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "grace-probe", "namespace": "default", "finalizers": ["ckalab.io/test-hold"]},
           "spec": {"nodeName": "ckalab-nowhere", "terminationGracePeriodSeconds": 30,
                    "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}}
    kube.core.create_namespaced_pod("default", pod)
    try:
        assert kube.delete("v1", "Pod", "grace-probe", "default", grace_seconds=1)
        assert kube.core.read_namespaced_pod("grace-probe", "default").metadata.deletion_grace_period_seconds == 1
    finally:
        kube.core.patch_namespaced_pod("grace-probe", "default", {"metadata": {"finalizers": None}})
        kube.delete("v1", "Pod", "grace-probe", "default", grace_seconds=0)
        wait_for(lambda: kube.get("v1", "Pod", "grace-probe", "default") is None, 60, "pod grace-probe to go")


def test_subject_access_review(kube):
    assert kube.can("kubernetes-admin", "delete", "nodes", groups=["kubeadm:cluster-admins"])
    assert not kube.can("system:anonymous", "list", "secrets", "default")
    assert not kube.can("someone", "create", "pods", "default")


def test_flags_as_kubeadm_sets_them(cluster):
    api = cluster.component_flags("kube-apiserver")
    assert api["authorization-mode"] == "Node,RBAC"
    assert api["enable-admission-plugins"] == "NodeRestriction"
    assert api["client-ca-file"].endswith("/pki/ca.crt")
    assert api["kubelet-client-certificate"].endswith("/pki/apiserver-kubelet-client.crt")
    assert api["etcd-certfile"].endswith("/pki/apiserver-etcd-client.crt")
    # As processes on this machine it listens on loopback only; as a static pod on a real node it
    # has no --bind-address, as on kubeadm (it listens in the node's own network namespace).
    assert api.get("bind-address") == (None if cluster.offers("static-pods") else "127.0.0.1")
    kcm = cluster.component_flags("kube-controller-manager")
    assert kcm["cluster-signing-cert-file"].endswith("/pki/ca.crt")
    assert kcm["root-ca-file"].endswith("/pki/ca.crt")
    etcd = cluster.component_flags("etcd")
    assert etcd["client-cert-auth"] == "true" and etcd["listen-client-urls"].startswith("https://127.0.0.1:")


def test_lifecycle_up_down_up_and_a_crashed_component(cluster, monkeypatch):
    """A second cluster in the same home: idempotent up, status after a kill, down twice."""
    import os
    import signal

    life = get_cluster("ckalab-life", "local")
    messages: list[str] = []
    try:
        life.up(progress=messages.append)
        assert life.status().state == "running"
        server = life.status().server
        Kube(life.kubeconfig).apply({"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": "survives", "namespace": "default"}, "data": {"k": "v"}})
        messages.clear()
        life.up(progress=messages.append)
        assert messages == ["Cluster 'ckalab-life' is already running (local backend)."]

        pid = life.status().components[3].pid  # kube-scheduler
        assert life.status().components[3].name == "kube-scheduler"
        os.kill(pid, signal.SIGKILL)
        st = wait_for(lambda: (s := life.status()).state == "degraded" and s, 10, "status to notice the kill")
        sched = next(c for c in st.components if c.name == "kube-scheduler")
        assert sched.state == "exited" and sched.log_tail
        assert "kube-scheduler" in st.render() and "last lines of" in st.render()

        # a lab step gives a degraded cluster a moment to settle, then says what to look at
        monkeypatch.setattr(labs, "SETTLE_SECONDS", 1)
        with pytest.raises(ClusterNotRunning) as exc:
            labs.client(life)
        assert str(exc.value) == ("Cluster 'ckalab-life' is degraded: 'ckalab status --name ckalab-life' shows "
                                  "what stopped and how to bring it back.")
        monkeypatch.setattr(labs, "SETTLE_SECONDS", 120)
        fix = threading.Timer(1, life.up, kwargs={"progress": messages.append})  # restarts only what stopped
        fix.start()
        try:
            assert labs.client(life).get("v1", "ConfigMap", "survives", "default")["data"] == {"k": "v"}
        finally:
            fix.join()
        assert life.status().state == "running"

        life.down(progress=messages.append)
        assert life.status().state == "stopped"
        messages.clear()
        life.down(progress=messages.append)
        assert messages == ["Cluster 'ckalab-life' is not running; nothing to stop."]

        life.up(progress=messages.append)
        assert Kube(life.kubeconfig).core.read_namespaced_config_map("survives", "default").data == {"k": "v"}
        assert life.status().server == server  # learners' kubeconfigs stay valid across restarts
    finally:
        life.down(progress=lambda m: None)


def test_status_of_a_cluster_that_never_existed():
    st = get_cluster("never-made", "local").status()
    assert st.state == "absent"
    assert st.message == "Cluster 'never-made' does not exist yet: run 'ckalab up --name never-made'."
