"""ckalab.controlplane: how the control-plane graders read a static pod manifest from the node.

The node's /etc/kubernetes is a directory on this machine (the cluster's etc/kubernetes), so these
cases write manifests into a directory of their own laid out the same way; what the graders
conclude from them on a live node is tested in the control-plane labs' modules.
"""

from __future__ import annotations

import types

import pytest

from ckalab import controlplane
from ckalab.grading import CheckFailed

MANIFEST = """\
apiVersion: v1
kind: Pod
metadata: {name: kube-apiserver, namespace: kube-system}
spec:
  containers:
  - name: kube-apiserver
    command:
    - kube-apiserver
    - --tls-cert-file=/etc/kubernetes/pki/apiserver.crt
    - --audit-log-path
    - /var/log/kubernetes/audit/audit.log
    - --enable-admission-plugins=NodeRestriction
    - --enable-admission-plugins=PodNodeSelector, AlwaysPullImages
    - --v=2
    - --v=4
    volumeMounts:
    - {name: k8s, mountPath: /etc/kubernetes, readOnly: true}
    - {name: pki, mountPath: /etc/kubernetes/pki}
    - {name: empty, mountPath: /data}
  volumes:
  - {name: k8s, hostPath: {path: /etc/kubernetes}}
  - {name: pki, hostPath: {path: /srv/pki}}
  - {name: empty, emptyDir: {}}
"""


@pytest.fixture
def node(tmp_path):
    """A cluster whose controlplane node's /etc/kubernetes is tmp_path/kubernetes (no node shell)."""
    (tmp_path / "kubernetes" / "manifests").mkdir(parents=True)

    def shell(node, command):
        raise RuntimeError("no node shell here")

    return types.SimpleNamespace(pki_dir=str(tmp_path / "kubernetes" / "pki"), shell=shell,
                                 manifests=tmp_path / "kubernetes" / "manifests")


def write(node, text: str, name: str = "kube-apiserver.yaml") -> None:
    (node.manifests / name).write_text(text)


def test_flags_are_read_as_the_component_reads_them(node):
    write(node, MANIFEST)
    pod = controlplane.StaticPod(node)
    assert pod.flags["tls-cert-file"] == "/etc/kubernetes/pki/apiserver.crt"
    assert pod.flags["audit-log-path"] == "/var/log/kubernetes/audit/audit.log"  # "--flag value" as two items
    assert pod.flags["v"] == "4"  # the last of a repeated flag wins
    # A list flag adds up over its occurrences; a name after a space keeps its space (the API
    # server does not know " AlwaysPullImages").
    assert pod.list_flag("enable-admission-plugins") == ["NodeRestriction", "PodNodeSelector", " AlwaysPullImages"]
    assert pod.list_flag("disable-admission-plugins") is None


def test_a_container_path_leads_to_the_node_through_the_deepest_host_path_volume(node):
    write(node, MANIFEST)
    pod = controlplane.StaticPod(node)
    assert pod.node_path("/etc/kubernetes/pki/apiserver.crt") == "/srv/pki/apiserver.crt"
    assert pod.node_path("/etc/kubernetes/audit/policy.yaml") == "/etc/kubernetes/audit/policy.yaml"
    mount, path = pod.mount_of("/etc/kubernetes/pki/../admin.conf")
    assert (mount["name"], path) == ("k8s", "/etc/kubernetes/admin.conf")
    assert pod.node_path("/data/x") is None  # an emptyDir: nothing on the node
    assert pod.node_path("/var/log/kubernetes/audit/audit.log") is None
    assert pod.mounts() == "/etc/kubernetes, /etc/kubernetes/pki, /data"


@pytest.mark.parametrize("text, message", [
    (None, "/etc/kubernetes/manifests/kube-apiserver.yaml is missing on the controlplane node, so the kubelet runs "
           "no kube-apiserver. Look: ls /etc/kubernetes/manifests (on the node: ckalab ssh controlplane)."),
    ("kind: Pod\nspec:\n  containers: []\n",
     "/etc/kubernetes/manifests/kube-apiserver.yaml is not a Pod with a container (spec.containers). Look: cat "
     "/etc/kubernetes/manifests/kube-apiserver.yaml (on the node: ckalab ssh controlplane)."),
    ("- just\n- a list\n",
     "/etc/kubernetes/manifests/kube-apiserver.yaml is not a Pod with a container (spec.containers). Look: cat "
     "/etc/kubernetes/manifests/kube-apiserver.yaml (on the node: ckalab ssh controlplane)."),
])
def test_a_manifest_the_kubelet_cannot_run_is_named(node, text, message):
    if text is not None:
        write(node, text)
    with pytest.raises(CheckFailed) as exc:
        controlplane.StaticPod(node)
    assert str(exc.value) == message


def test_malformed_yaml_says_where_and_what_it_breaks(node):
    write(node, MANIFEST.replace("  containers:", "  containers:\n\t- bad"))
    with pytest.raises(CheckFailed) as exc:
        controlplane.StaticPod(node)
    msg = str(exc.value)
    assert msg.startswith("/etc/kubernetes/manifests/kube-apiserver.yaml")
    assert msg.endswith("The kubelet cannot read it either, so the static pod does not run. Look: cat -A "
                        "/etc/kubernetes/manifests/kube-apiserver.yaml (on the node: ckalab ssh controlplane); "
                        "indentation uses spaces only.")


def test_files_outside_etc_kubernetes_need_the_node_shell(node):
    assert controlplane.read_file(node, "/var/lib/kubelet/config.yaml") is None
    assert controlplane.read_file(node, "/etc/kubernetes/nope.conf") is None
    (node.manifests.parent / "admin.conf").write_text("x")
    assert controlplane.read_file(node, "/etc/kubernetes/admin.conf") == b"x"
