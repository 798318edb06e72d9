"""Grader for admission-plugins: the learner enables an admission plugin in the API server's static
pod manifest (keeping NodeRestriction) and, for PodNodeSelector, annotates the namespace.

Graded by behaviour: the grader asks the running API server for a pod (or, for
DenyServiceExternalIPs, a Service) in the lab's namespace with a server-side dry run (built-in
admission plugins run on dry runs, and nothing is stored) and reads what admission made of it.
The flags are a lower-level check read from the node's manifest, so they also report while the
API server is down (a misspelt plugin name keeps it from starting); requests use short timeouts.
The node's files are read with ckalab.controlplane, as every control-plane lab's grader does.
"""

from __future__ import annotations

import ssl

from ckalab.controlplane import (API_SERVER as MANIFEST, LOOK_CONTAINER, ON_NODE, StaticPod, admin_kubeconfig,
                                 container_state, get)
from ckalab.grading import check, expect, fail, fixture, skip

ANNOTATION = "scheduler.alpha.kubernetes.io/node-selector"
TIMEOUT = 4  # seconds for each request to the API server: a check must never hang on it
# Every admission plugin kube-apiserver v1.36 knows (kube-apiserver -h): any other name keeps it
# from starting.
KNOWN = frozenset("""AlwaysAdmit AlwaysDeny AlwaysPullImages CertificateApproval CertificateSigning
CertificateSubjectRestriction ClusterTrustBundleAttest DefaultIngressClass DefaultStorageClass
DefaultTolerationSeconds DenyServiceExternalIPs EventRateLimit ExtendedResourceToleration ImagePolicyWebhook
JobValidation LimitPodHardAntiAffinityTopology LimitRanger MutatingAdmissionPolicy MutatingAdmissionWebhook
NamespaceAutoProvision NamespaceExists NamespaceLifecycle NodeDeclaredFeatureValidator NodeRestriction
OwnerReferencesPermissionEnforcement PersistentVolumeClaimResize PodGroupProtection PodGroupWorkloadExists
PodNodeSelector PodResizeValidator PodSecurity PodTolerationRestriction PodTopologyLabels Priority ResourceQuota
RuntimeClass ServiceAccount StorageObjectInUseProtection TaintNodesByCondition ValidatingAdmissionPolicy
ValidatingAdmissionWebhook""".split())


def _selector(text: str) -> dict[str, str]:
    """A node-selector annotation ("k=v,k2=v2") as a dict; unparsable parts are kept as keys."""
    out = {}
    for part in str(text).split(","):
        key, _, value = part.partition("=")
        if key.strip():
            out[key.strip()] = value.strip()
    return out


def _kube(cluster):
    from ckalab.kube import Kube

    return Kube(cluster.kubeconfig, timeout=TIMEOUT)


def _dry_run(cluster, path: str, body: dict) -> tuple[dict | None, str]:
    """(the object admission made, '') of a server-side dry-run create, or (None, the refusal)."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    from ckalab.kube import api_error_text

    try:
        return _kube(cluster).request("POST", path, query={"dryRun": "All"}, body=body), ""
    except ApiException as exc:
        return None, f"{exc.status}: {api_error_text(exc)}"
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        fail(f"The API server stopped answering ({type(exc).__name__}). If you have just changed the manifest, "
             f"the kubelet needs about 15 s to start it again. Look: kubectl get --raw /readyz.")


def _probe_pod(namespace: str) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "ckalab-admission-probe", "namespace": namespace},
            "spec": {"automountServiceAccountToken": False,
                     "containers": [{"name": "probe", "image": "busybox:1.36", "imagePullPolicy": "IfNotPresent"}]}}


# --- checks -----------------------------------------------------------------------------------

@fixture
def node(cluster):
    """The cluster, when its control plane runs as static pods on a node (else no manifest to edit)."""
    if not cluster.offers("static-pods"):
        skip("needs the control plane as static pods on a real node ('ckalab up --nodes real', as root)")
    return cluster


@check(1, "the API server's static pod manifest is a valid Pod", hint=f"cat {MANIFEST} ({ON_NODE})")
def test_manifest(node):
    StaticPod(node)


@check(3, "--enable-admission-plugins names the task's plugin and keeps NodeRestriction", after="test_manifest",
       hint=f"grep -- admission-plugins {MANIFEST} ({ON_NODE})")
def test_flags(node, lab):
    plugin = lab.params["plugin"]
    pod = StaticPod(node)
    enabled = pod.list_flag("enable-admission-plugins")
    look = f"Look: grep -- admission-plugins {MANIFEST} ({ON_NODE})."
    expect(enabled is not None, f"{MANIFEST} has no --enable-admission-plugins: only the default plugins run "
           f"(no {plugin}, no NodeRestriction). {look}")
    shown = ",".join(enabled)
    unknown = [n for n in enabled if n not in KNOWN]
    expect(not unknown, f"--enable-admission-plugins={shown} names {', '.join(repr(n) for n in unknown)}, which "
           f"{'is' if len(unknown) == 1 else 'are'} no admission plugin of this API server (names are case-sensitive): "
           f"it refuses to start. Look: the container's log ({LOOK_CONTAINER}; {ON_NODE}).")
    expect(plugin in enabled, f"--enable-admission-plugins={shown} does not name {plugin}. {look}")
    expect("NodeRestriction" in enabled,
           f"--enable-admission-plugins={shown} no longer names NodeRestriction: without it a kubelet may change "
           f"other Nodes and pods bound to other nodes. {look}")
    disabled = pod.list_flag("disable-admission-plugins") or []
    both = [n for n in (plugin, "NodeRestriction") if n in disabled]
    expect(not both, f"--disable-admission-plugins={','.join(disabled)} names {' and '.join(both)}, which "
           f"--enable-admission-plugins names too: the API server refuses to start with a plugin both enabled and "
           f"disabled. {look}")


@check(2, "the API server runs and answers /readyz", after="test_manifest",
       hint=f"{LOOK_CONTAINER} ({ON_NODE})")
def test_running(node):
    server = admin_kubeconfig(node)["server"]
    try:
        status, body = get(node, "/readyz")
    except ssl.SSLCertVerificationError as exc:
        fail(f"The API server at {server} answers with a certificate that does not verify against the cluster CA "
             f"({exc.verify_message}). Look: kubectl get --raw /readyz.")
    if status is None:
        fail(f"The API server at {server} does not answer ({body}).{container_state(node)} If you have "
             f"just changed the manifest, the kubelet needs about 15 s to start it again. Look: {LOOK_CONTAINER} "
             f"({ON_NODE}).")
    expect(status == 200, f"The API server at {server} answers /readyz with {status}: {body.strip()[:300]}. "
           f"Look: kubectl get --raw '/readyz?verbose'.")


@check(4, "a request in the lab's namespace shows the plugin's effect (server-side dry run)",
       after="test_running",
       hint="kubectl run probe -n NAMESPACE --image=busybox:1.36 --image-pull-policy=IfNotPresent --dry-run=server -o yaml")
def test_effect(node, lab):
    plugin, ns = lab.params["plugin"], lab.params["namespace"]
    running = (f"the API server that answers does not run {plugin} (if you have just changed the manifest, wait "
               f"~15 s for the kubelet to restart it; kubectl get pods -n kube-system shows its age)")
    look_pod = (f"Look: kubectl run probe -n {ns} --image=busybox:1.36 --image-pull-policy=IfNotPresent "
                f"--dry-run=server -o yaml.")
    if plugin == "DenyServiceExternalIPs":
        svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ckalab-admission-probe", "namespace": ns},
               "spec": {"ports": [{"port": 80}], "externalIPs": ["192.0.2.10"]}}
        made, refused = _dry_run(node, f"/api/v1/namespaces/{ns}/services", svc)
        expect(made is None, f"A Service with spec.externalIPs [192.0.2.10] in namespace {ns} is accepted "
               f"(server-side dry run): {running}. Look: kubectl create service with externalIPs and --dry-run=server.")
        expect("external ips" in refused.lower(), f"A Service with spec.externalIPs in namespace {ns} is refused, but not by "
               f"{plugin} ({refused}). Look: kubectl get namespace {ns}.")
        return

    if plugin == "PodNodeSelector":
        want = _selector(lab.params["selector"])
        obj = _kube(node).get("v1", "Namespace", ns)
        expect(obj is not None, f"Namespace '{ns}' not found (kubectl get namespace {ns}).")
        value = ((obj["metadata"].get("annotations") or {}).get(ANNOTATION))
        expect(value is not None, f"Namespace {ns} has no annotation {ANNOTATION}, so PodNodeSelector gives its pods "
               f"no node selector. Look: kubectl get namespace {ns} -o yaml.")
        have = _selector(value)
        expect(all(have.get(k) == v for k, v in want.items()),
               f"Namespace {ns}'s annotation {ANNOTATION} is '{value}': its pods would not get "
               f"{lab.params['selector']}. Look: kubectl get namespace {ns} -o yaml.")

    made, refused = _dry_run(node, f"/api/v1/namespaces/{ns}/pods", _probe_pod(ns))
    expect(made is not None, f"A pod in namespace {ns} is refused (server-side dry run): {refused}. {look_pod}")
    spec = made.get("spec") or {}
    if plugin == "PodNodeSelector":
        got = spec.get("nodeSelector") or {}
        shown = ",".join(f"{k}={v}" for k, v in got.items()) or "none"
        expect(all(got.get(k) == v for k, v in want.items()),
               f"A pod created in namespace {ns} (server-side dry run) gets node selector {shown}, not "
               f"{lab.params['selector']}: {running}. {look_pod}")
    else:
        policy = (spec.get("containers") or [{}])[0].get("imagePullPolicy")
        expect(policy == "Always", f"A pod created in namespace {ns} with imagePullPolicy IfNotPresent (server-side "
               f"dry run) keeps imagePullPolicy {policy}: {running}. {look_pod}")
