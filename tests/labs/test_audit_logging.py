"""audit-logging on real nodes: the learner's policy and the API server's audit flags, graded by
the events the grader's own requests leave in the log. Skipped unless CKALAB_REAL_NODES=1 (root).

    CKALAB_REAL_NODES=1 CKALAB_TEST_HOME=/tmp/ckt-x CKALAB_TEST_KEEP=1 \\
        .venv/bin/pytest tests/labs/test_audit_logging.py -x -q

The lab is started once; each answer below is written in full from ckalab's own manifest (one
API server restart each, ~20 s) instead of resetting between cases. The module ends with the
control plane restored and ckalab's own audit log working again.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest
import yaml
from conftest import LabHarness, check_of, failed_ids, put_api_server_manifest, wait_api_server_refused

from ckalab import labs
from ckalab.kube import Kube
from ckalab.waiting import wait_for

LAB = "audit-logging"
RESOURCES = ("configmaps", "serviceaccounts", "roles")
MANIFEST = "kube-apiserver.yaml"


@pytest.fixture(scope="module")
def contained(real_nodes):
    yield real_nodes
    labs.contain(labs.load(LAB), real_nodes)  # never leave the cluster with the lab's audit settings


def harness(cluster, **params) -> LabHarness:
    h = LabHarness(cluster, LAB)
    h.lab = h.lab.with_params(**params)
    if h.workdir.exists():
        shutil.rmtree(h.workdir)
    return h


@pytest.fixture(scope="module")
def started(contained):
    """The default variant, started once for the answers below."""
    h = harness(contained)
    h.reset()
    return h


# --- acting on the node (its /etc/kubernetes is the cluster's etc/kubernetes) ------------------

def node_sh(h, script: str) -> subprocess.CompletedProcess:
    argv, env = h.cluster.shell("controlplane", ["sh", "-c", script])
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def running_id(h) -> str:
    return node_sh(h, "crictl ps --name kube-apiserver --state running -q | head -n 1").stdout.strip()


def api_answers(h) -> bool:
    try:
        Kube(h.cluster.kubeconfig, timeout=2).request("GET", "/api/v1/namespaces/default")
        return True
    except Exception:  # noqa: BLE001
        return False


def host(h, node_path: str):
    assert node_path.startswith("/etc/kubernetes/"), node_path
    return h.cluster.etc / node_path.removeprefix("/etc/kubernetes/")


def policy_text(p: dict, secrets_level="Metadata", resource_level="RequestResponse", last="None",
                group: str | None = None, namespace: str | None = None, first_none=False, secret_verbs=None) -> str:
    ns = namespace or p["namespace"]
    group = ("rbac.authorization.k8s.io" if p["resource"] == "roles" else "") if group is None else group
    rules = [{"level": "None"}] if first_none else []
    rules += [
        {"level": secrets_level, "resources": [{"group": "", "resources": ["secrets"]}], "namespaces": [ns]},
        {"level": resource_level, "resources": [{"group": group, "resources": [p["resource"]]}], "namespaces": [ns]},
    ]
    if secret_verbs:
        rules[-2]["verbs"] = secret_verbs
    if last:
        rules.append({"level": last})
    return yaml.safe_dump({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
                           "rules": rules}, sort_keys=False)


def answer(h, policy: str | None = None, flags: dict | None = None, mounts: list | None = None,
           policy_path: str | None = None, expect_down: bool = False) -> None:
    """Write the policy and ckalab's manifest with the audit flags and mounts given (defaults: the
    reference solution's), then wait for the kubelet to run it (answering, or exited)."""
    p = h.params
    policy_path = policy_path or p["policy"]
    target = host(h, policy_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(policy if policy is not None else policy_text(p))
    pod = yaml.safe_load((h.cluster.dir / "manifests.orig" / MANIFEST).read_text())
    c = pod["spec"]["containers"][0]
    want = {"audit-policy-file": p["policy"], "audit-log-path": p["log"], "audit-log-maxage": str(p["maxage"]),
            "audit-log-maxbackup": str(p["maxbackup"]), **(flags or {})}
    c["command"] = [a for a in c["command"] if a.split("=", 1)[0][2:] not in want]
    c["command"] += [f"--{k}={v}" for k, v in want.items() if v is not None]
    if mounts is None:
        mounts = [("lab-policy", p["policy"].rsplit("/", 1)[0], None, True, "DirectoryOrCreate"),
                  ("lab-log", p["log"].rsplit("/", 1)[0], None, False, "DirectoryOrCreate")]
    for name, path, inside, ro, kind in mounts:
        c["volumeMounts"].append({"name": name, "mountPath": inside or path, "readOnly": ro})
        pod["spec"]["volumes"].append({"name": name, "hostPath": {"path": path, "type": kind}})
    install_manifest(h, yaml.safe_dump(pod, sort_keys=False), expect_down)


def install_manifest(h, text: str, expect_down: bool = False) -> None:
    # The API server reads its policy only when it starts, and the kubelet restarts it only when
    # the manifest changes: a revision annotation makes every answer a change.
    pod = yaml.safe_load(text)
    pod["metadata"].setdefault("annotations", {})["ckalab.io/test-revision"] = str(time.time())
    text = yaml.safe_dump(pod, sort_keys=False)
    before, since = running_id(h), time.time()
    put_api_server_manifest(h.cluster, text)
    if expect_down:
        wait_api_server_refused(h.cluster, since)
        return
    wait_for(lambda: running_id(h) not in ("", before) and api_answers(h), 150,
             "the API server to run with the edited manifest")


def grade(h):
    return labs.check(h.lab, h.cluster)


# --- the lab ---------------------------------------------------------------------------------------

def test_every_resource_variant_is_known_to_the_grader():
    from ckalab import grading

    assert set(labs.load(LAB).data["params"]["resource"]["choices"]) == set(RESOURCES)
    assert set(grading.load_grader(labs.graders_root() / f"{LAB}.py").RESOURCES) == set(RESOURCES)


def test_fresh_lab_fails_with_diagnoses(started):
    h = started
    r = grade(h)
    assert check_of(r, "test_policy").message == (
        "No file /etc/kubernetes/audit/policy.yaml on the controlplane node. Look: ls -l /etc/kubernetes/audit "
        "(on the node: ckalab ssh controlplane).")
    assert check_of(r, "test_log_flag").message == (
        "--audit-log-path=/var/log/kubernetes/audit/audit.log is /var/log/kubernetes/audit/audit.log on the node "
        "(through the volume 'audit-log'); the task asks for /var/log/kubernetes/lab-audit/audit.log. Look: grep -- "
        "--audit-log-path /etc/kubernetes/manifests/kube-apiserver.yaml, and that volume's hostPath.")
    assert check_of(r, "test_retention").message.startswith("--audit-log-maxage is not set; the task asks to keep")
    assert check_of(r, "test_api_server_up").passed
    assert check_of(r, "test_secrets_metadata").message == (
        'Not checked yet: first fix "the API server writes its audit log to the file asked for".')


def test_reference_solution_passes_and_reset_gives_ckalab_its_audit_log_back(contained):
    h = harness(contained)
    h.reset()
    h.solve()
    r = h.grade()
    assert r.passed and r.score == r.max_score == 16, r.render()
    # ckalab's own log (classroom evidence) gets nothing while the lab's settings run ...
    h.reset()
    flags = h.cluster.component_flags("kube-apiserver")
    assert flags["audit-log-path"] == "/var/log/kubernetes/audit/audit.log"
    # ... and records a request again after reset
    h.kubectl("get", "configmap", "ckalab-audit-after-reset", "-n", "default", check=False)
    log = h.cluster.dir / "logs" / "audit.log"
    wait_for(lambda: "ckalab-audit-after-reset" in log.read_text(errors="replace")[-2_000_000:], 20,
             "ckalab's audit log to record a request after reset")


def test_roles_variant_reference_solution_passes(contained):
    h = harness(contained, resource="roles", namespace="team-red", policy="/etc/kubernetes/security/audit-policy.yaml",
                log="/var/log/apiserver/audit.log", maxage=5, maxbackup=3)
    h.reset()
    h.solve()
    r = h.grade()
    assert r.passed, r.render()


def test_api_server_down_checks_report_from_the_node_and_reset_restores(started):
    h = started
    answer(h, policy=policy_text(h.params, secrets_level="Secret"), expect_down=True)
    t = time.monotonic()
    r = grade(h)
    assert time.monotonic() - t < 30
    assert check_of(r, "test_policy").message == (
        "Rule 1 of /etc/kubernetes/audit/policy.yaml has level 'Secret'; a level is one of None, Metadata, Request, "
        "RequestResponse (spelled exactly so).")
    msg = check_of(r, "test_api_server_up").message
    assert msg.startswith("The API server does not answer ("), msg
    assert "While it is down, only the node's files are checked. Look: crictl ps -a --name kube-apiserver" in msg
    assert check_of(r, "test_policy_flag").passed and check_of(r, "test_log_flag").passed
    assert check_of(r, "test_secrets_metadata").message.startswith("Not checked yet")
    labs.contain(h.lab, h.cluster)
    assert api_answers(h)


# --- correct answers in other forms ---------------------------------------------------------------

def test_files_mounted_one_by_one_under_other_container_paths_passes(started):
    """The policy file and the log file mounted themselves (File / FileOrCreate), the policy seen
    under another path inside the container; no final None rule (no match means None)."""
    h = started
    p = h.params
    answer(h, policy=policy_text(p, last=None),
           flags={"audit-policy-file": "/etc/audit/policy.yaml", "audit-log-path": "/audit/audit.log"},
           mounts=[("pol", p["policy"], "/etc/audit/policy.yaml", True, "File"),
                   ("log", p["log"], "/audit/audit.log", False, "FileOrCreate")])
    r = grade(h)
    assert r.passed, r.render()


def test_duplicate_flags_last_wins_and_extra_none_rules_passes(started):
    """ckalab's audit flags kept and the learner's appended after them (the API server takes the
    last), flags as "--name value" pairs, a leading None rule for a user the task does not care
    about, and every stage logged."""
    h = started
    p = h.params
    text = policy_text(p).replace("omitStages:\n- RequestReceived\n", "")
    text = text.replace("rules:\n", "rules:\n- level: None\n  users: [system:kube-proxy]\n", 1)
    pod = yaml.safe_load((h.cluster.dir / "manifests.orig" / MANIFEST).read_text())
    c = pod["spec"]["containers"][0]
    c["command"] += ["--audit-policy-file", p["policy"], "--audit-log-path", p["log"],
                     f"--audit-log-maxage={p['maxage']}", f"--audit-log-maxbackup={p['maxbackup']}"]
    for name, path, ro in (("pol", "/etc/kubernetes/audit", True), ("log", p["log"].rsplit("/", 1)[0], False)):
        c["volumeMounts"].append({"name": name, "mountPath": path, "readOnly": ro})
        pod["spec"]["volumes"].append({"name": name, "hostPath": {"path": path, "type": "DirectoryOrCreate"}})
    host(h, p["policy"]).write_text(text)
    install_manifest(h, yaml.safe_dump(pod, sort_keys=False))
    r = grade(h)
    assert r.passed, r.render()


def test_resource_rule_without_namespaces_scoped_by_a_none_rule_passes(started):
    """The other namespaces silenced first by a None rule for every namespace but the task's."""
    h = started
    p = h.params
    others = [n["metadata"]["name"] for n in Kube(h.cluster.kubeconfig).list("v1", "Namespace")
              if n["metadata"]["name"] != p["namespace"]]
    policy = yaml.safe_dump({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [
        {"level": "None", "namespaces": others},
        {"level": "None", "nonResourceURLs": ["*"]},
        {"level": "Metadata", "resources": [{"resources": ["secrets"]}]},
        {"level": "RequestResponse", "resources": [{"group": "", "resources": [p["resource"]]}]},
        {"level": "None"}]})
    answer(h, policy=policy)
    r = grade(h)
    assert r.passed, r.render()


# --- wrong answers -----------------------------------------------------------------------------------

def _ro_log(h):
    p = h.params
    return dict(mounts=[("lab-policy", p["policy"].rsplit("/", 1)[0], None, True, "DirectoryOrCreate"),
                        ("lab-log", p["log"].rsplit("/", 1)[0], None, True, "DirectoryOrCreate")])


MUTATIONS = {
    # name: (answer's keyword arguments from the params, failing check, phrase of its message)
    "secrets at RequestResponse": (
        lambda p: dict(policy=policy_text(p, secrets_level="RequestResponse")),
        "test_secrets_metadata", "was logged with its contents (create at RequestResponse"),
    "secrets at Request": (
        lambda p: dict(policy=policy_text(p, secrets_level="Request")),
        "test_secrets_metadata", "the log now holds the Secret's data. The task asks for Metadata"),
    "secrets rule only for get": (
        lambda p: dict(policy=policy_text(p, secret_verbs=["get"])),
        "test_secrets_metadata", "Only some requests on Secret"),
    "catch-all None first": (
        lambda p: dict(policy=policy_text(p, first_none=True)),
        "test_secrets_metadata", "has no event for it. Look: the rules in /etc/kubernetes/audit/policy.yaml (the "
                                 "first rule that matches decides)"),
    "resource at Request": (
        lambda p: dict(policy=policy_text(p, resource_level="Request")),
        "test_resource_request_response", "was logged as create at Request, delete at Request, get at Request; the "
                                          "task asks for RequestResponse"),
    "resource rule in the wrong group": (
        lambda p: dict(policy=policy_text(p, group="apps")),
        "test_resource_request_response", "has no event for it. Look: the rule for configmaps in "
                                          "/etc/kubernetes/audit/policy.yaml and the API group that kubectl "
                                          "api-resources shows for configmaps"),
    "last rule Metadata instead of None": (
        lambda p: dict(policy=policy_text(p, last="Metadata")),
        "test_rest_not_logged", "The log also records requests the task leaves out: secrets"),
    "rules for the default namespace": (
        lambda p: dict(policy=policy_text(p, namespace="default")),
        "test_rest_not_logged", "in namespace 'default' (create at Metadata"),
    "log still in ckalab's file": (
        lambda p: dict(flags={"audit-log-path": "/var/log/kubernetes/audit/audit.log"}),
        "test_log_flag", "--audit-log-path=/var/log/kubernetes/audit/audit.log is /var/log/kubernetes/audit/audit.log "
                         "on the node (through the volume 'audit-log'); the task asks for "
                         "/var/log/kubernetes/lab-audit/audit.log"),
    "log volume mounted read-only": (
        lambda p: dict(mounts=[("lab-policy", "/etc/kubernetes/audit", None, True, "DirectoryOrCreate"),
                               ("lab-log", "/var/log/kubernetes/lab-audit", None, True, "DirectoryOrCreate")],
                       expect_down=True),
        "test_log_flag", "The volume 'lab-log' that holds --audit-log-path=/var/log/kubernetes/lab-audit/audit.log "
                         "is mounted readOnly"),
    "policy directory not mounted": (
        lambda p: dict(mounts=[("lab-log", "/var/log/kubernetes/lab-audit", None, False, "DirectoryOrCreate")],
                       expect_down=True),
        "test_policy_flag", "--audit-policy-file=/etc/kubernetes/audit/policy.yaml is inside the container only: no "
                            "hostPath volume is mounted there"),
    "log written to stdout": (
        lambda p: dict(flags={"audit-log-path": "-"}),
        "test_log_flag", "--audit-log-path=- sends the audit events to the API server's standard output"),
    "maxbackup off by one": (
        lambda p: dict(flags={"audit-log-maxbackup": "3"}),
        "test_retention", "--audit-log-maxbackup is 3; the task asks to keep old logs at most 2 files"),
    "maxage left out": (
        lambda p: dict(flags={"audit-log-maxage": None}),
        "test_retention", "--audit-log-maxage is not set; the task asks to keep old logs at most 7 days"),
    "policy with the wrong kind": (
        lambda p: dict(policy=policy_text(p).replace("kind: Policy", "kind: AuditPolicy"), expect_down=True),
        "test_policy", "has apiVersion 'audit.k8s.io/v1' and kind 'AuditPolicy'; an audit policy is apiVersion "
                       "audit.k8s.io/v1, kind Policy"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_wrong_answer_fails(started, name):
    make, failing, phrase = MUTATIONS[name]
    h = started
    answer(h, **make(h.params))
    r = grade(h)
    assert not r.passed
    assert failing in failed_ids(r), r.render()
    msg = check_of(r, failing).message
    assert phrase in msg, msg
    # A message diagnoses; it never hands over the policy.
    assert "level: Metadata" not in json.dumps([c.message for c in r.checks])


def test_teardown_puts_back_ckalabs_own_policy_when_it_was_edited(started):
    h = started
    ckalab_policy = h.cluster.etc / "audit-policy.yaml"
    original = ckalab_policy.read_text()
    ckalab_policy.write_text(policy_text(h.params))  # the task says to leave it alone; done anyway
    labs.contain(h.lab, h.cluster)
    assert ckalab_policy.read_text() == original
    assert (h.cluster.etc / "audit-policy.yaml.edited").exists()
    (h.cluster.etc / "audit-policy.yaml.edited").unlink()
    labs.contain(h.lab, h.cluster)  # idempotent: nothing to undo
    assert ckalab_policy.read_text() == original
