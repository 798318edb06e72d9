"""A workshop on one shared, existing Kubernetes cluster: a namespace per student.

`up` gives every student of the roster a namespace (with a ResourceQuota and LimitRange), a
ServiceAccount bound (RoleBinding) to the built-in `admin` ClusterRole inside that namespace only,
and a kubeconfig with a TokenRequest token; a ValidatingAdmissionPolicy closes what `admin` still
allows (see `_policy`); then it sets up, in each namespace, the labs that fit in one namespace, each student with
their own variant (seed = student id). `grade` grades every student with the instructor's
credentials and writes the gradebook; `down` deletes exactly what `up` labelled.

Why `admin` in one namespace is safe: RBAC escalation prevention refuses any Role or RoleBinding
granting more than the creator already holds, and a RoleBinding never reaches beyond its
namespace, so a student can create the Roles and RoleBindings the RBAC labs ask for but cannot
bind cluster-admin, create cluster-scoped objects, or touch another student's namespace
(tests/test_classroom.py checks this with real requests).

Which labs qualify is computed from the lab data, not listed: see `qualification()`.
"""

from __future__ import annotations

import ast
import base64
import csv
import dataclasses
import io
import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

from . import grading, home, labs, results
from .cluster.base import ClusterStatus
from .errors import CkalabError
from .kube import Kube, api_error_text
from .waiting import wait_for

CLASS_LABEL = "ckalab.io/classroom"
STUDENT_LABEL = "ckalab.io/student"
SERVICE_ACCOUNT = "student"
BINDING = "ckalab-student-admin"
STUDENT_ROLE = "admin"  # built-in, namespaced rights including Roles/RoleBindings, no quota/namespace edits
PSA_LABEL = "pod-security.kubernetes.io/enforce"
SLUG = re.compile(r"[^a-z0-9]+")
CONTROL_PLANE = {"read_file", "manifest", "component_flags", "pki_dir"}


def classroom_dir(name: str) -> Path:
    return home.home() / "classroom" / name


# --- an existing cluster, known only by a kubeconfig ----------------------------------------

class ExternalCluster:
    """Enough of the Cluster interface for labs.start and grading.run on any kubeconfig."""

    backend = "external"
    pki_dir = ""
    features: frozenset[str] = frozenset()  # a shared cluster's nodes are not ckalab's to reach

    def offers(self, feature: str) -> bool:
        return feature in self.features

    def __init__(self, kubeconfig: str | Path, name: str = "classroom"):
        self.kubeconfig = Path(kubeconfig).resolve()
        self.name = name

    def status(self) -> ClusterStatus:
        if not hasattr(self, "_kube"):  # parsing a kubeconfig costs ~50 ms: once per cluster
            self._kube = Kube(self.kubeconfig, timeout=5) if self.kubeconfig.is_file() else None
        ok = self._kube is not None and self._kube.ping()
        return ClusterStatus(self.name, self.backend, "running" if ok else "stopped", kubeconfig=str(self.kubeconfig))

    def _no_access(self, *_):
        raise CkalabError("The control plane of a shared cluster is not inspected by ckalab classroom.")

    read_file = manifest = component_flags = _no_access


@dataclass
class StudentLab(labs.Lab):
    """A lab variant for one student: own work dir, own labels (so `down` finds everything)."""
    base: Path = Path(".")
    extra_labels: dict = field(default_factory=dict)

    @property
    def workdir(self) -> Path:
        return self.base / self.id

    @property
    def label(self) -> dict[str, str]:
        return {labs.LAB_LABEL: self.id, **self.extra_labels}


# --- roster ----------------------------------------------------------------------------------

@dataclass
class Student:
    id: str
    slug: str
    namespace: str


def slug(student_id: str) -> str:
    return SLUG.sub("-", student_id.strip().lower()).strip("-")[:40].strip("-")


def read_roster(path: str | Path, class_name: str) -> list[Student]:
    """Students from a CSV: a column `student` (or `id`), else the first column; '#' lines skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CkalabError(f"Cannot read the roster {path}: {exc}") from None
    rows = [r for r in csv.reader(io.StringIO(text)) if r and r[0].strip() and not r[0].lstrip().startswith("#")]
    if not rows:
        raise CkalabError(f"The roster {path} lists no students.")
    header = [c.strip().lower() for c in rows[0]]
    col = next((header.index(c) for c in ("student", "id", "student_id") if c in header), None)
    body = rows[1:] if col is not None else rows
    col = col or 0
    students, seen, problems = [], {}, []
    for n, r in enumerate(body, 2 if rows is not body else 1):
        sid = r[col].strip() if col < len(r) else ""
        s = slug(sid)
        if not s:
            problems.append(f"line {n}: student id '{sid}' has no letters or digits")
        elif s in seen:
            problems.append(f"line {n}: '{sid}' gives the same namespace as '{seen[s]}'")
        else:
            seen[s] = sid
            students.append(Student(sid, s, f"{class_name}-{s}"[:63].rstrip("-")))
    if problems:
        raise CkalabError(f"Roster {path}:\n  " + "\n  ".join(problems))
    return students


# --- which labs fit in one namespace ---------------------------------------------------------

def _grader_uses(lab: labs.Lab) -> set[str]:
    """What of concern the grader touches (static reading): the control plane, the work dir."""
    used = set()
    for node in ast.walk(ast.parse(lab.grader.read_text())):
        if isinstance(node, ast.FunctionDef) and "workdir" in {a.arg for a in node.args.args}:
            used.add("workdir")
        if isinstance(node, ast.Attribute):
            if node.attr == "workdir":
                used.add("workdir")
            elif node.attr in CONTROL_PLANE:
                used.add("control-plane")
    return used


def qualification(lab: labs.Lab, kube: Kube) -> str | None:
    """None when the lab can run per student in one namespace, else why it cannot."""
    own = lab.params.get("namespace")
    for o in lab.objects():
        if o.get("kind") == "Namespace" or not kube.resource(o["apiVersion"], o["kind"]).namespaced:
            return f"it needs cluster-scoped objects ({o['kind']}), which a namespace-limited student cannot create"
        ns = (o.get("metadata") or o).get("namespace", "default")
        if ns != own:
            return f"it uses namespace '{ns}', not its own namespace parameter"
    uses = _grader_uses(lab)
    if "control-plane" in uses:
        return "its grader inspects the control plane (PKI files, component flags), which students may not touch"
    if "workdir" in uses:
        return "its grader reads files in the learner's work directory, which stay on the learner's machine"
    if own is None:
        return "it has no 'namespace' parameter, so it cannot be moved into a student's namespace"
    return None


def qualifying(kube: Kube, lab_ids: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
    ok, why = [], {}
    for lab_id in lab_ids or labs.lab_ids():
        try:
            reason = qualification(labs.load(lab_id), kube)
        except CkalabError as exc:
            reason = f"its data does not load ({str(exc).splitlines()[-1].strip()})"
        (why.__setitem__(lab_id, reason) if reason else ok.append(lab_id))
    return ok, why


_LABS: dict[str, labs.Lab] = {}


def _variant(lab_id: str, seed: str | None) -> labs.Lab:
    """labs.load(lab_id, seed) with the lab's data read and validated once, not per student."""
    if lab_id not in _LABS:
        _LABS[lab_id] = labs.load(lab_id)
    return _LABS[lab_id].variant(seed)


# Parameters that name cluster-wide identities. Namespaces keep students' objects apart, but a
# User name is one identity in the whole cluster: two students whose variants picked the same
# user would grant each other's user rights, and the least-privilege check would rightly see
# them. Each student's variant gets its own user name, within this class (two classes on one
# cluster may both have an "alice").
IDENTITY_PARAMS = ("user",)


def student_lab(lab_id: str, st: Student, class_name: str) -> StudentLab:
    lab = _variant(lab_id, st.id)
    own = {p: f"{lab.params[p]}-{class_name}-{st.slug}" for p in IDENTITY_PARAMS if p in lab.params}
    lab = lab.with_params(namespace=st.namespace, **own)
    base = {f.name: getattr(lab, f.name) for f in dataclasses.fields(labs.Lab)}
    return StudentLab(**base, base=classroom_dir(class_name) / "work" / st.slug,
                      extra_labels={CLASS_LABEL: class_name, STUDENT_LABEL: st.slug})


# --- up ----------------------------------------------------------------------------------------

def _cluster_entry(kubeconfig: Path, server: str | None) -> dict:
    """The instructor's current cluster (server, CA inlined) for the students' kubeconfigs."""
    cfg = yaml.safe_load(kubeconfig.read_text())
    ctx_name = cfg.get("current-context")
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cl = dict(next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"]))
    if "certificate-authority" in cl:
        ca = Path(cl.pop("certificate-authority"))
        ca = ca if ca.is_absolute() else kubeconfig.parent / ca
        cl["certificate-authority-data"] = base64.b64encode(ca.read_bytes()).decode()
    if server:
        cl["server"] = server
    return cl


def student_kubeconfig(class_name: str, st: Student, cluster_entry: dict, token: str) -> str:
    ctx = f"{class_name}-{st.slug}"
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": ctx,
        "clusters": [{"name": class_name, "cluster": cluster_entry}],
        "users": [{"name": st.slug, "user": {"token": token}}],
        "contexts": [{"name": ctx, "context": {"cluster": class_name, "user": st.slug, "namespace": st.namespace}}],
    }, sort_keys=False)


def _labels(class_name: str, st: Student) -> dict:
    return {CLASS_LABEL: class_name, STUDENT_LABEL: st.slug}


def _namespace(kube: Kube, class_name: str, st: Student, pod_security: str) -> None:
    """The student's namespace, with Pod Security admission: without it `admin` could start a
    privileged or hostPath pod and take over a node of a real shared cluster."""
    ns = kube.get("v1", "Namespace", st.namespace)
    if ns is not None and ns["metadata"].get("deletionTimestamp"):  # a recent `down`: let it finish
        wait_for(lambda: kube.get("v1", "Namespace", st.namespace) is None, 180,
                 f"namespace '{st.namespace}' (being deleted) to be gone", interval=0.5)
        ns = None
    if ns is not None and (ns["metadata"].get("labels") or {}).get(CLASS_LABEL) != class_name:
        raise CkalabError(f"namespace '{st.namespace}' exists and was not created by this classroom; "
                          "rename the class (--class) or the student")
    labels = _labels(class_name, st)
    if pod_security != "none":
        labels[PSA_LABEL] = pod_security
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": st.namespace}}, labels)
    kube.apply_all(_limits(st.namespace), labels)
    # Until the quota controller has counted the namespace, the API server refuses every pod
    # ("status unknown for quota"): wait for it, so lab setup right after does not race it.
    wait_for(lambda: ((kube.get("v1", "ResourceQuota", "ckalab-student", st.namespace) or {}).get("status") or {})
             .get("hard"), 60, f"the ResourceQuota of namespace '{st.namespace}' to be counted", interval=0.2)


ADMISSION = "admissionregistration.k8s.io/v1"
# What `admin` in one namespace still allows and a workshop must not: opening the namespace to
# every identity (a RoleBinding to system:unauthenticated or system:authenticated, to the user
# system:anonymous or to another namespace's service account), tokens that outlive the class, and
# legacy token Secrets that never expire. RBAC cannot say "only these subjects", so the API
# server's own ValidatingAdmissionPolicy (CEL, GA since 1.30) does, for requests made by the
# service accounts of a student's namespace; the instructor's own requests are not matched.
def _policy(class_name: str, token_seconds: int) -> list[dict]:
    name = f"ckalab-classroom-{class_name}"
    subjects_ok = (
        "!has(object.subjects) || object.subjects.all(s, "
        "(s.kind == 'ServiceAccount' && (!has(s.namespace) || s.namespace == '' "
        "|| s.namespace == request.namespace)) || (s.kind == 'User' && !s.name.startsWith('system:')))")
    rules = [
        {"apiGroups": ["rbac.authorization.k8s.io"], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
         "resources": ["rolebindings"]},
        {"apiGroups": [""], "apiVersions": ["*"], "operations": ["CREATE"], "resources": ["serviceaccounts/token"]},
        {"apiGroups": [""], "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"], "resources": ["secrets"]},
    ]
    policy = {
        "apiVersion": ADMISSION, "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {"resourceRules": rules},
            "matchConditions": [{"name": "student-namespace-identity", "expression":
                                 "request.userInfo.username.startsWith('system:serviceaccount:' + request.namespace "
                                 "+ ':')"}],
            "validations": [
                {"expression": f"request.resource.resource != 'rolebindings' || ({subjects_ok})",
                 "message": "In this workshop a RoleBinding may name only service accounts of your own namespace "
                            "and users whose names do not start with 'system:'; groups (such as "
                            "system:authenticated or system:unauthenticated) and other namespaces are refused.",
                 "reason": "Forbidden"},
                {"expression": "request.resource.resource != 'serviceaccounts' || (has(object.spec.expirationSeconds) && "
                               f"object.spec.expirationSeconds <= {int(token_seconds)})",
                 "message": f"In this workshop tokens live at most {int(token_seconds)} seconds (the class's "
                            "lifetime): ask for less with kubectl create token NAME --duration=1h.",
                 "reason": "Forbidden"},
                {"expression": "request.resource.resource != 'secrets' || !has(object.type) || "
                               "object.type != 'kubernetes.io/service-account-token'",
                 "message": "In this workshop legacy service-account token Secrets (which never expire) are "
                            "refused: use kubectl create token for a short-lived one.",
                 "reason": "Forbidden"},
            ],
        },
    }
    binding = {
        "apiVersion": ADMISSION, "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"],
                 "matchResources": {"namespaceSelector": {"matchLabels": {CLASS_LABEL: class_name}}}},
    }
    return [policy, binding]


# Per student: enough for every namespaced lab several times over, not enough to starve a shared
# cluster. LimitRange defaults give pods without requests something the quota can count.
QUOTA = {"pods": "30", "services": "10", "secrets": "60", "configmaps": "60", "persistentvolumeclaims": "4",
         "services.loadbalancers": "0", "services.nodeports": "0",
         "requests.cpu": "2", "requests.memory": "2Gi", "limits.cpu": "4", "limits.memory": "4Gi"}
LIMITS = {"default": {"cpu": "200m", "memory": "128Mi"}, "defaultRequest": {"cpu": "20m", "memory": "32Mi"}}


def _limits(namespace: str) -> list[dict]:
    return [{"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "ckalab-student", "namespace": namespace},
             "spec": {"hard": QUOTA}},
            {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "ckalab-student", "namespace": namespace},
             "spec": {"limits": [{"type": "Container", **LIMITS}]}}]


def admission_problem(kube: Kube, cluster, class_name: str, lab_id: str, pod_security: str) -> str | None:
    """Solve the lab for real in a probe namespace set up like a student's: does the shared
    cluster's admission (Pod Security, quotas, policies) let the task be solved there?"""
    probe = Student("(probe)", "probe", f"{class_name}--probe")  # '--' never occurs in a student slug
    _namespace(kube, class_name, probe, pod_security)
    lab = student_lab(lab_id, probe, class_name)
    try:
        labs.reset(lab, cluster, kube)
        labs.solve(lab, cluster, kube)
    except ApiException as exc:
        return f"its solution is refused in a student namespace: {api_error_text(exc)}"
    except CkalabError as exc:
        lines = [x for x in str(exc).splitlines() if "forbidden" in x.lower()] or str(exc).splitlines()[-1:]
        return f"its solution is refused in a student namespace: {lines[0].strip()[:300]}"
    return None


def _up_student(kube: Kube, cluster, class_name: str, st: Student, lab_ids: list[str],
                cl_entry: dict, token_s: int, pod_security: str) -> str:
    labels = _labels(class_name, st)
    _namespace(kube, class_name, st, pod_security)
    kube.apply({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": SERVICE_ACCOUNT, "namespace": st.namespace}}, labels)
    kube.apply({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": BINDING, "namespace": st.namespace},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": STUDENT_ROLE},
                "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": st.namespace}]}, labels)
    tr = kube.core.create_namespaced_service_account_token(
        SERVICE_ACCOUNT, st.namespace, client.AuthenticationV1TokenRequest(
            spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=token_s)))
    d = classroom_dir(class_name) / "students" / st.slug
    d.mkdir(parents=True, exist_ok=True)
    kc = d / "kubeconfig"
    kc.touch(mode=0o600)
    kc.write_text(student_kubeconfig(class_name, st, cl_entry, tr.status.token))
    tasks = [f"# Workshop '{class_name}': tasks for {st.id}\n",
             f"Use your kubeconfig: export KUBECONFIG=$PWD/kubeconfig  (namespace {st.namespace})\n"]
    for lab_id in lab_ids:
        lab = student_lab(lab_id, st, class_name)
        labs.start(lab, cluster, kube)
        tasks.append(lab.task.rstrip() + "\n")
    (d / "tasks.md").write_text("\n".join(tasks))
    return str(kc)


def up(kubeconfig: str | Path, roster: str | Path, class_name: str = "workshop", lab_ids: list[str] | None = None,
       token_hours: float = 12, server: str | None = None, workers: int = 8,
       pod_security: str = "baseline") -> dict:
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", class_name):
        raise CkalabError(f"Class name '{class_name}' must be a short DNS label (lowercase, digits, '-').")
    cluster = ExternalCluster(kubeconfig, class_name)
    if cluster.status().state != "running":
        raise CkalabError(f"Cannot reach the cluster of {kubeconfig}.")
    students = read_roster(roster, class_name)
    kube = Kube(cluster.kubeconfig)
    if pod_security not in ("none", "privileged", "baseline", "restricted"):
        raise CkalabError(f"--pod-security '{pod_security}': choose none, privileged, baseline or restricted.")
    kube.apply_all(_policy(class_name, int(token_hours * 3600)), {CLASS_LABEL: class_name})
    ok, why = qualifying(kube, lab_ids)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        problems = list(pool.map(lambda i: admission_problem(kube, cluster, class_name, i, pod_security), ok))
    for lab_id, problem in zip(list(ok), problems):
        if problem:
            ok.remove(lab_id)
            why[lab_id] = problem
    cl_entry = _cluster_entry(cluster.kubeconfig, server)
    state = {"class": class_name, "kubeconfig": str(cluster.kubeconfig), "labs": ok, "excluded": why,
             "students": [dataclasses.asdict(s) for s in students], "created_at": time.time()}
    d = classroom_dir(class_name)
    d.mkdir(parents=True, exist_ok=True)
    (d / "classroom.json").write_text(json.dumps(state, indent=2))
    local = threading.local()

    def one(st):
        if not hasattr(local, "kube"):
            local.kube = Kube(cluster.kubeconfig)
        try:
            return st.id, _up_student(local.kube, cluster, class_name, st, ok, cl_entry, int(token_hours * 3600),
                                      pod_security), None
        except Exception as exc:  # noqa: BLE001 - one student's failure is reported, the rest go on
            return st.id, None, f"{type(exc).__name__}: {exc}"

    with ThreadPoolExecutor(max(1, workers)) as pool:
        done = list(pool.map(one, students))
    state["kubeconfigs"] = {sid: kc for sid, kc, err in done if kc}
    state["failed"] = {sid: err for sid, _, err in done if err}
    (d / "classroom.json").write_text(json.dumps(state, indent=2))
    return state


def load_state(class_name: str) -> dict:
    try:
        return json.loads((classroom_dir(class_name) / "classroom.json").read_text())
    except (OSError, ValueError):
        raise CkalabError(f"No classroom '{class_name}' here: run 'ckalab classroom up' first.") from None


# --- grade ---------------------------------------------------------------------------------------

def grade(class_name: str = "workshop", out_dir: str | Path | None = None, workers: int = 8,
          write: bool = True) -> results.Gradebook:
    """Grade every student's labs concurrently and write gradebook.csv / gradebook.xml (not with
    write=False: the class view regrades every few seconds and keeps only the last grid)."""
    state = load_state(class_name)
    cluster = ExternalCluster(state["kubeconfig"], class_name)
    if cluster.status().state != "running":
        raise CkalabError(f"Cannot reach the cluster of {state['kubeconfig']}.")
    students = [Student(**s) for s in state["students"] if s["id"] in state.get("kubeconfigs", {})]
    jobs = [(st, lab_id) for st in students for lab_id in state["labs"]]
    local = threading.local()
    Kube(cluster.kubeconfig).resource("v1", "Pod")  # fill the discovery cache once, before the threads

    def one(job):
        st, lab_id = job
        if not hasattr(local, "kube"):
            local.kube = Kube(cluster.kubeconfig)
        lab = student_lab(lab_id, st, class_name)
        try:
            r = grading.run_direct(lab, cluster, local.kube)
        except Exception as exc:  # noqa: BLE001 - a broken grader costs that lab, not the gradebook
            r = grading.GradeResult(lab_id, False, 0, 0, 0.0, [grading.CheckResult(
                "grader", "grader runs", False, 0, 0, f"{type(exc).__name__}: {exc}")], lab.seed)
        return st, lab, r

    book = results.Gradebook(list(state["labs"]))
    digests = {i: _variant(i, None).files_digest() for i in state["labs"]}
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for st, lab, r in pool.map(one, jobs):
            book.add(st.id, results.lab_entry(lab, r, digest=digests[lab.id]))
    if write:
        results.write(book, Path(out_dir) if out_dir else classroom_dir(class_name))
    return book


# --- down ------------------------------------------------------------------------------------

def down(class_name: str = "workshop", kubeconfig: str | Path | None = None) -> list[str]:
    """Delete the namespaces `up` created (labelled with this class), and with them everything
    inside; nothing unlabelled is touched. Returns the namespaces deleted."""
    kc = kubeconfig or load_state(class_name)["kubeconfig"]
    kube = Kube(kc)
    sel = f"{CLASS_LABEL}={class_name}"
    gone = []
    for ns in kube.list("v1", "Namespace", label_selector=sel):
        if kube.delete("v1", "Namespace", ns["metadata"]["name"]):
            gone.append(ns["metadata"]["name"])
    for api_version, kind in ((ADMISSION, "ValidatingAdmissionPolicyBinding"), (ADMISSION, "ValidatingAdmissionPolicy"),
                              ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
                              ("rbac.authorization.k8s.io/v1", "ClusterRole")):
        for obj in kube.list(api_version, kind, label_selector=sel):
            if obj["metadata"].get("deletionTimestamp"):
                continue  # an earlier `down` is removing it already
            kube.delete(api_version, kind, obj["metadata"]["name"])
            gone.append(f"{kind}/{obj['metadata']['name']}")
    return gone


# --- process evidence: the API server's audit log ---------------------------------------------
#
# What it proves: which identity made which API calls, when, from which address and with which
# client (user agent), and what the API server answered, including the refusals. What it does
# not prove: who sat at the keyboard (a student's kubeconfig is a bearer token anyone holding it
# can use), where a manifest was copied from (a pasted file is one burst of writes, but so is
# `kubectl apply -f dir/`), or anything done without the API server (reading a friend's screen,
# files on a laptop). At Metadata level no request bodies are logged, and the local backend's
# policy leaves most read-only system traffic out, so reads by other tools may be missing.

WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
BURST_SECONDS = 2.0
BURST_MIN = 3
# ckalab's own client (classroom up/grade, as the instructor): setup and grading, not a student's work.
CKALAB_AGENT = "OpenAPI-Generator/"
EVIDENCE_CAVEAT = ("What this shows: which identity made which API calls, when, from where and with which "
                   "client, and the answers. What it cannot show: who typed them (a kubeconfig works for "
                   "whoever holds it), where pasted manifests came from, or anything done outside the API "
                   "server; request bodies are not logged.")


@dataclass
class AuditCall:
    time: str
    verb: str
    resource: str
    name: str
    namespace: str
    code: int
    user: str
    agent: str
    ip: str
    denied: bool
    own: bool      # made with the student's own identity

    @property
    def write(self) -> bool:
        return self.verb in WRITE_VERBS


def read_audit(path: str | Path) -> list[dict]:
    """The audit log's events (JSON lines); unreadable lines are skipped, a missing file is an error.
    A directory means every audit*.log in it: the API server rotates the log (--audit-log-maxsize)
    into audit-<time>.log files beside it."""
    p = Path(path)
    try:
        files = sorted(p.glob("audit*.log")) if p.is_dir() else [p]
        if not files:
            raise FileNotFoundError(2, "no audit*.log in this directory")
        lines = [x for f in files for x in f.read_text(encoding="utf-8", errors="replace").splitlines()]
    except OSError as exc:
        raise CkalabError(f"Cannot read the audit log {path}: {exc.strerror}. On the local backend it is "
                          "logs/audit.log in the cluster's directory; elsewhere the API server's "
                          "--audit-log-path.") from None
    events = []
    for line in lines:
        try:
            e = json.loads(line)
        except ValueError:
            continue
        if isinstance(e, dict) and e.get("kind") == "Event" and e.get("stage", "ResponseComplete") == "ResponseComplete":
            events.append(e)
    return events


def _lab_resources(lab_id: str, st: Student, class_name: str) -> set[str]:
    """The resources (lowercase plurals) of a lab's objects, to narrow a timeline to one lab."""
    lab = student_lab(lab_id, st, class_name)
    kinds = {kind for _, kind in lab.kinds()}
    return {k.lower()[:-1] + "ies" if k.endswith("y") else k.lower() + "s" for k in kinds}


def _call(e: dict, own: bool) -> AuditCall:
    ref = e.get("objectRef") or {}
    code = int((e.get("responseStatus") or {}).get("code") or 0)
    decision = (e.get("annotations") or {}).get("authorization.k8s.io/decision")
    res = ref.get("resource") or e.get("requestURI", "")
    if ref.get("subresource"):
        res += "/" + ref["subresource"]
    return AuditCall(str(e.get("stageTimestamp") or e.get("requestReceivedTimestamp") or ""), str(e.get("verb")),
                     str(res), str(ref.get("name") or ""), str(ref.get("namespace") or ""), code,
                     str((e.get("user") or {}).get("username", "")), str(e.get("userAgent") or ""),
                     ",".join(e.get("sourceIPs") or []), code == 403 or decision == "forbid", own)


def _ts(t: str) -> float:
    try:
        return datetime.fromisoformat(t.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


def bursts(calls: list[AuditCall], window: float = BURST_SECONDS, least: int = BURST_MIN) -> list[tuple[str, int, float]]:
    """(start, writes, seconds) for each run of at least `least` writes, each within `window` of the last."""
    out, run = [], []
    for c in [c for c in calls if c.write and not c.denied]:
        if run and _ts(c.time) - _ts(run[-1].time) > window:
            if len(run) >= least:
                out.append((run[0].time, len(run), _ts(run[-1].time) - _ts(run[0].time)))
            run = []
        run.append(c)
    if len(run) >= least:
        out.append((run[0].time, len(run), _ts(run[-1].time) - _ts(run[0].time)))
    return out


def evidence(class_name: str, audit_log: str | Path, student: str | None = None,
             lab_id: str | None = None) -> dict[str, dict]:
    """Per student: the calls made with their identity (anywhere), the writes other identities
    made in their namespace (ckalab's own setup and grading left out, counted), and a summary;
    only events since this classroom's `up`."""
    state = load_state(class_name)
    students = [Student(**s) for s in state["students"]]
    if student is not None:
        students = [s for s in students if student in (s.id, s.slug)]
        if not students:
            raise CkalabError(f"No student '{student}' in classroom '{class_name}' "
                              f"(the roster: {', '.join(s['id'] for s in state['students'])[:200]}).")
    if lab_id is not None and lab_id not in state["labs"]:
        raise CkalabError(f"Lab '{lab_id}' is not one of classroom '{class_name}''s labs "
                          f"({', '.join(state['labs'])}).")
    # A class name (and so its namespaces) can come back after a `down`: only this class's time counts.
    since = float(state.get("created_at") or 0)
    events = [e for e in read_audit(audit_log) if _ts(str(e.get("requestReceivedTimestamp") or "")) >= since]
    out = {}
    for st in students:
        prefix = f"system:serviceaccount:{st.namespace}:"
        wanted = _lab_resources(lab_id, st, class_name) if lab_id else None
        calls, setup = [], 0
        for e in events:
            user = str((e.get("user") or {}).get("username", ""))
            ns = str((e.get("objectRef") or {}).get("namespace") or "")
            own = user.startswith(prefix)
            if not own:
                if ns != st.namespace or e.get("verb") not in WRITE_VERBS:
                    continue
                if str(e.get("userAgent", "")).startswith(CKALAB_AGENT):
                    setup += 1
                    continue
            c = _call(e, own)
            if wanted is not None and c.resource.split("/")[0] not in wanted:
                continue
            calls.append(c)
        calls.sort(key=lambda c: c.time)
        writes = [c for c in calls if c.write and not c.denied]
        out[st.id] = {
            "namespace": st.namespace, "calls": calls, "setup_writes": setup,
            "summary": {"first": calls[0].time if calls else None, "last": calls[-1].time if calls else None,
                        "calls": len(calls), "writes": len(writes), "denied": sum(c.denied for c in calls),
                        "other_identity_writes": sum(1 for c in writes if not c.own),
                        "bursts": bursts([c for c in calls if c.own]), "agents": sorted({c.agent.split(" ")[0] for c in calls if c.own}),
                        "ips": sorted({c.ip for c in calls if c.own})}}
    return out
