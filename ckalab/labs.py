"""The lab catalogue: lab data (labs/<id>/lab.yaml + files), validation, and the lifecycle verbs
start / reset / solve / check / hint. A task is data; the only Python logic per lab is its grader.

Every verb takes the cluster and, optionally, a Kube client the caller already holds (a classroom
sets up hundreds of variants with one client). The mock exam's rule, no feedback on a running
exam's tasks, is kept here, so every front end (CLI, lab bar, results.submit) gets it.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import home
from .home import YAML_LOADER
from .errors import CkalabError
from .kube import FIELD_MANAGER, LAB_LABEL, Kube
from .waiting import WaitTimeout, wait_for

SCHEMA = "ckalab/v1"
PACKAGE = Path(__file__).resolve().parent
# A checkout keeps labs/, graders/, kind/ and notebooks/ beside the package; a built wheel carries
# copies in ckalab/_data (setup.py puts them there). CKALAB_DATA_DIR names another such root.
PACKAGED_DATA = PACKAGE / "_data"
REPO = PACKAGE.parent
# The file `start` leaves in a lab's work directory: the lab, seed and parameters it was started with.
MARKER = ".ckalab-lab.json"
TEMPLATE = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
LAB_ID = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")

# Every field a lab.yaml may have: name -> (required, type, what it is). One place, so the
# validator and the docs (labs/README.md) cannot drift apart.
FIELDS: dict[str, tuple[bool, type | tuple, str]] = {
    "apiVersion": (True, str, f"schema version, '{SCHEMA}'"),
    "id": (True, str, "the lab id: names the folder, the grader file, the CLI argument and the notebook"),
    "title": (True, str, "one line shown in `ckalab labs`"),
    "order": (True, int, "teaching order (notebook number)"),
    "topic": (True, str, "curriculum topic"),
    "task": (True, str, "the task text (Markdown, what to do, not how): always `task.md`"),
    "hints": (True, list, "progressive hints: a nudge first, then the command family"),
    "params": (False, dict, "name -> {default, choices | range}: names the task uses (randomised per seed)"),
    "setup": (False, dict, "preconditions, labelled with the lab: files under setup/ (fields below)"),
    "solution": (True, dict, "the reference solution: files under solution/ (fields below)"),
    "teardown": (False, dict, "undoes what restoring ckalab's manifests and kubelet configs cannot (e.g. "
                              "secrets encrypted with the learner's key): `teardown/teardown.sh`, run by "
                              "start, reset and the exam's finish before the restore; idempotent, "
                              "works with the API server down"),
    "targets": (False, list,
                "`{apiVersion, kind, name, namespace}` of objects the task asks for; `reset` removes them"),
    "needs": (False, list, "cluster features the lab needs: exec, netpol-enforcement, private-registry (some checks); "
                          "static-pods, node-shell (the whole lab: real nodes)"),
    "data": (False, dict, "name -> file under data/: extra files the lab's grader or scripts read"),
    "exam": (False, dict, "{weight: int, minutes: int}: how the lab counts in a mock exam"),
}
# The fields of `setup`, `solution` and `teardown`.
STEP_FIELDS: dict[str, tuple[type, str]] = {
    "manifests": (list, "files applied with server-side apply and the lab label"),
    "script": (str, "the step's bash script (setup/setup.sh, solution/solve.sh, teardown/teardown.sh)"),
    "creates": (list, "`{apiVersion, kind}` of labelled objects the script creates; `reset` sweeps them"),
}
# The one folder layout: every file in a lab folder is one of these and is named by lab.yaml.
LAYOUT: dict[str, str] = {
    "lab.yaml": "the lab's fields (below)",
    "task.md": "the task text, named by `task`",
    "setup/": "preconditions: manifests and `setup.sh`, named by `setup`",
    "solution/": "the reference solution: manifests and `solve.sh`, named by `solution`",
    "teardown/": "`teardown.sh`, named by `teardown` (labs that change the control plane or a node)",
    "data/": "extra files named by `data` (e.g. the quiz's questions)",
}
STEP_SCRIPT = {"setup": "setup/setup.sh", "solution": "solution/solve.sh", "teardown": "teardown/teardown.sh"}


def data_root() -> Path:
    """Where labs/, graders/, kind/ and notebooks/ are: $CKALAB_DATA_DIR, the wheel's copy or the checkout."""
    if os.environ.get("CKALAB_DATA_DIR"):
        return Path(os.environ["CKALAB_DATA_DIR"])
    return PACKAGED_DATA if (PACKAGED_DATA / "labs").is_dir() else REPO


def labs_root() -> Path:
    return Path(os.environ.get("CKALAB_LABS_DIR") or data_root() / "labs")


def graders_root() -> Path:
    return Path(os.environ.get("CKALAB_GRADERS_DIR") or data_root() / "graders")


@dataclass
class Lab:
    id: str
    dir: Path
    data: dict
    params: dict[str, Any] = field(default_factory=dict)
    seed: str | None = None
    # True for the mock exam's own copy of a task (exam.task_lab): the exam sets it up and grades
    # it, so the no-feedback rule, which is for practice copies, does not stop it.
    exam_task: bool = False

    @property
    def title(self) -> str:
        return self.data["title"]

    @property
    def order(self) -> int:
        return self.data["order"]

    @property
    def grader(self) -> Path:
        return graders_root() / f"{self.id}.py"

    @property
    def workdir(self) -> Path:
        return home.work_root() / self.id

    @property
    def label(self) -> dict[str, str]:
        return {LAB_LABEL: self.id}

    @property
    def needs(self) -> list[str]:
        return list(self.data.get("needs") or [])

    def render(self, text: str) -> str:
        """Substitute {{ param }} placeholders with this variant's values."""
        def sub(m: re.Match) -> str:
            if m.group(1) not in self.params:
                raise CkalabError(f"Lab '{self.id}' uses an undeclared parameter '{m.group(1)}'.")
            return str(self.params[m.group(1)])
        return TEMPLATE.sub(sub, text)

    def read(self, rel: str) -> str:
        return self.render((self.dir / rel).read_text())

    @property
    def task(self) -> str:
        return self.read(self.data["task"])

    @property
    def hints(self) -> list[str]:
        return [self.render(h) for h in self.data["hints"]]

    def manifests(self, step: str) -> list[dict]:
        objs: list[dict] = []
        for rel in (self.data.get(step) or {}).get("manifests", []):
            objs += [d for d in yaml.load_all(self.read(rel), Loader=YAML_LOADER) if d]  # noqa: S506 - safe
        return objs

    def script(self, step: str) -> str | None:
        rel = (self.data.get(step) or {}).get("script")
        return self.read(rel) if rel else None

    @property
    def targets(self) -> list[dict]:
        return [json.loads(self.render(json.dumps(t))) for t in self.data.get("targets") or []]

    def data_file(self, name: str) -> Path:
        """The path of an extra file the lab names under `data` (read it with learner-proof code)."""
        rel = (self.data.get("data") or {}).get(name)
        if not rel:
            raise CkalabError(f"Lab '{self.id}' names no data file '{name}' in its lab.yaml.")
        return self.dir / rel

    # --- variants: all derived from the data read once ----------------------------------------

    def variant(self, seed: str | None) -> Lab:
        """This lab with the parameters `seed` picks (None: the defaults), without reading it again."""
        return dataclasses.replace(self, params=resolve_params(self.data.get("params"), self.id, seed), seed=seed)

    def with_params(self, **overrides) -> Lab:
        """The same lab and seed with some parameters replaced (e.g. moved into another namespace).
        Task text, setup, targets and grader all read lab.params, so they all follow."""
        return dataclasses.replace(self, params={**self.params, **overrides})

    def objects(self) -> list[dict]:
        """Every object the lab names: its setup and solution manifests and its targets."""
        return self.manifests("setup") + self.manifests("solution") + self.targets

    def footprint(self) -> set[tuple[str, str, str]]:
        """(kind, namespace, name) of every object the lab's setup, solution and targets name."""
        out = set()
        for o in self.objects():
            md = o.get("metadata") or o
            if o.get("kind") != "Namespace":
                out.add((o["kind"], md.get("namespace", ""), md["name"]))
        return out

    def kinds(self) -> set[tuple[str, str]]:
        """(apiVersion, kind) of everything the lab creates: what `reset` sweeps by label.
        Namespaces are left out: they may hold the learner's other work."""
        created = [c for step in ("setup", "solution") for c in (self.data.get(step) or {}).get("creates") or []]
        return {(o["apiVersion"], o["kind"]) for o in self.objects() + created if o.get("kind") != "Namespace"}

    def started(self) -> bool:
        return (self.workdir / MARKER).is_file()

    def files_digest(self) -> str:
        """sha256 over the lab's files and its grader: identifies exactly what was graded."""
        h = hashlib.sha256()
        for p in sorted([*self.dir.rglob("*"), self.grader]):
            if p.is_file():
                h.update(p.relative_to(p.parents[1]).as_posix().encode() + b"\0" + p.read_bytes())
        return h.hexdigest()


# --- parameters ------------------------------------------------------------------------------

def resolve_params(spec: dict, lab_id: str, seed: str | None) -> dict[str, Any]:
    """Defaults without a seed; with one, a reproducible pick per parameter from its generator."""
    out = {}
    for pname, p in (spec or {}).items():
        value = p.get("default")
        if seed is not None:
            rng = random.Random(f"{seed}/{lab_id}/{pname}")
            if "choices" in p:
                value = rng.choice(p["choices"])
            elif "range" in p:
                value = rng.randint(*p["range"])
        out[pname] = value
    return out


# --- validation ------------------------------------------------------------------------------

def validate(lab_dir: Path, data: Any) -> list[str]:
    """Every problem with one lab's data, all at once (not just the first)."""
    where = lab_dir / "lab.yaml"
    if not isinstance(data, dict):
        return [f"{where}: expected a mapping of fields, got {type(data).__name__}"]
    problems = []
    for key, (required, typ, _) in FIELDS.items():
        if key not in data:
            if required:
                problems.append(f"{where}: missing required field '{key}'")
        elif not isinstance(data[key], typ) or (typ is int and isinstance(data[key], bool)):
            problems.append(f"{where}: field '{key}' should be {getattr(typ, '__name__', typ)}")
    for key in data:
        if key not in FIELDS:
            problems.append(f"{where}: unknown field '{key}' (known: {', '.join(FIELDS)})")
    if data.get("apiVersion") not in (None, SCHEMA):
        problems.append(f"{where}: apiVersion is '{data.get('apiVersion')}', this ckalab reads '{SCHEMA}'")
    lab_id = data.get("id")
    if isinstance(lab_id, str):
        if lab_id != lab_dir.name:
            problems.append(f"{where}: id '{lab_id}' differs from its folder name '{lab_dir.name}'")
        if not LAB_ID.match(lab_id):
            problems.append(f"{where}: id '{lab_id}' must be lowercase words joined by '-'")
        if not (graders_root() / f"{lab_id}.py").is_file():
            problems.append(f"{where}: no grader at {graders_root() / (lab_id + '.py')}")
    files = []
    if isinstance(data.get("task"), str):
        files.append(data["task"])
    for step in STEP_SCRIPT:
        s = data.get(step)
        if not isinstance(s, dict):
            continue
        for k, v in s.items():
            if step == "teardown" and k != "script":
                problems.append(f"{where}: teardown.{k}: a teardown is only a script (teardown.script)")
            elif k not in STEP_FIELDS:
                problems.append(f"{where}: {step}.{k} is unknown (known: {', '.join(STEP_FIELDS)})")
            elif not isinstance(v, STEP_FIELDS[k][0]):
                problems.append(f"{where}: {step}.{k} should be {STEP_FIELDS[k][0].__name__}")
            elif k == "creates":
                if not all(isinstance(c, dict) and {"apiVersion", "kind"} <= set(c) for c in v):
                    problems.append(f"{where}: {step}.creates lists {{apiVersion, kind}} mappings")
            else:
                for rel in v if isinstance(v, list) else [v]:
                    files.append(rel)
                    if k == "script" and rel != STEP_SCRIPT[step]:
                        problems.append(f"{where}: {step}.script is '{rel}'; the layout wants '{STEP_SCRIPT[step]}'")
                    elif not str(rel).startswith(f"{step}/"):
                        problems.append(f"{where}: {step} file '{rel}' belongs in the folder {step}/")
    extra = data.get("data") if isinstance(data.get("data"), dict) else {}
    for name, rel in extra.items():
        if not (isinstance(rel, str) and rel.startswith("data/")):
            problems.append(f"{where}: data.{name} should be a file under data/, not {rel!r}")
        else:
            files.append(rel)
    if isinstance(data.get("task"), str) and data["task"] != "task.md":
        problems.append(f"{where}: task is '{data['task']}'; the layout wants 'task.md'")
    named = {str(f) for f in files} | {"lab.yaml"}
    for path in sorted(p for p in lab_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(lab_dir).as_posix()
        if rel not in named:
            problems.append(f"{where}: '{rel}' is in the lab folder but lab.yaml does not name it")
    params = data.get("params") if isinstance(data.get("params"), dict) else {}
    for pname, p in params.items():
        if not isinstance(p, dict) or "default" not in p:
            problems.append(f"{where}: params.{pname} needs a 'default'")
        elif "choices" in p and not isinstance(p["choices"], list):
            problems.append(f"{where}: params.{pname}.choices should be a list")
        elif "range" in p and not (isinstance(p["range"], list) and len(p["range"]) == 2):
            problems.append(f"{where}: params.{pname}.range should be [low, high]")
    texts = [json.dumps(data.get("hints")), json.dumps(data.get("targets"))]
    for rel in files:
        path = lab_dir / str(rel)
        if not path.is_file():
            problems.append(f"{where}: file '{rel}' does not exist")
            continue
        texts.append(path.read_text())
        if path.suffix in (".yaml", ".yml"):
            try:
                list(yaml.load_all(TEMPLATE.sub("x", path.read_text()), Loader=YAML_LOADER))  # noqa: S506 - safe
            except yaml.YAMLError as exc:
                problems.append(f"{path}: not valid YAML: {exc}")
    for text in texts:
        for used in TEMPLATE.findall(text):
            if used not in params:
                problems.append(f"{where}: '{{{{ {used} }}}}' is used but not declared in params")
    for need in data.get("needs") or []:
        if need not in NEEDS:
            problems.append(f"{where}: needs '{need}' is unknown (known: {', '.join(NEEDS)})")
    for i, t in enumerate(data.get("targets") or []):
        if not isinstance(t, dict) or not {"apiVersion", "kind", "name"} <= set(t):
            problems.append(f"{where}: targets[{i}] needs apiVersion, kind and name")
    return sorted(set(problems), key=problems.index)


# What a lab folder gave, by its files' contents: lab_ids(), load() and the teardowns' search read
# every lab many times per command or test, and the files rarely change in between.
_PARSED: dict[tuple[str, str], tuple[Any, list[str]]] = {}
_VALIDATED: dict[tuple[str, str], list[str]] = {}


def _read(lab_dir: Path) -> tuple[Any, list[str]]:
    path = lab_dir / "lab.yaml"
    try:
        text = path.read_text()
    except OSError as exc:
        return None, [f"{path}: {exc.strerror}"]
    key = (str(path), text)
    if key not in _PARSED:
        try:
            _PARSED[key] = (yaml.load(text, Loader=YAML_LOADER), [])  # noqa: S506 - a safe loader
        except yaml.YAMLError as exc:
            _PARSED[key] = (None, [f"{path}: not valid YAML: {exc}"])
    data, problems = _PARSED[key]
    return copy.deepcopy(data), list(problems)


def _validated(lab_dir: Path, data: Any) -> list[str]:
    """validate(), again only when a file of the lab folder changed (or its grader came or went)."""
    h = hashlib.sha256()
    if isinstance(data, dict):
        grader = graders_root() / f"{data.get('id')}.py"
        h.update(f"{grader} {grader.is_file()}\0".encode())
    for f in sorted(lab_dir.rglob("*")):
        try:
            h.update(f.relative_to(lab_dir).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
        except (IsADirectoryError, OSError):
            continue
    key = (str(lab_dir), h.hexdigest())
    if key not in _VALIDATED:
        _VALIDATED[key] = validate(lab_dir, data)
    return list(_VALIDATED[key])


def validate_all() -> list[str]:
    problems = []
    for d in sorted(p for p in labs_root().iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
        data, errs = _read(d)
        problems += errs or validate(d, data)
    return problems


def lab_ids() -> list[str]:
    found = []
    for d in labs_root().iterdir():
        if (d / "lab.yaml").is_file():
            data, errs = _read(d)
            if not errs and isinstance(data, dict):
                found.append((data.get("order", 999), d.name))
    return [name for _, name in sorted(found)]


def load(lab_id: str, seed: str | None = None) -> Lab:
    d = labs_root() / lab_id
    if not (d / "lab.yaml").is_file():
        known = ", ".join(lab_ids()) or "none"
        raise CkalabError(f"No lab '{lab_id}' (looked in {labs_root()}). Labs: {known}")
    data, errs = _read(d)
    errs = errs or _validated(d, data)
    if errs:
        raise CkalabError(f"Lab '{lab_id}' has invalid data:\n  " + "\n  ".join(errs))
    return Lab(lab_id, d, data).variant(seed)


def catalogue() -> list[Lab]:
    return [load(i) for i in lab_ids()]


# --- lifecycle -------------------------------------------------------------------------------

# A lab's `needs` name what some of its checks require, each mapped to the cluster feature
# (Cluster.features) that provides it; backends are never named here.
NEEDS = {
    "exec": ("running containers (kubectl exec)", "exec"),
    "netpol-enforcement": ("a CNI that enforces NetworkPolicy, for real traffic probes", "netpol-enforcement"),
    "static-pods": ("a control plane run as static pods by a real kubelet (local backend: "
                    "'ckalab up --nodes real' as root)", "static-pods"),
    "node-shell": ("a shell on the nodes ('ckalab ssh NODE')", "node-shell"),
    "private-registry": ("a registry with logins the nodes pull from (real nodes)", "private-registry"),
}


def lacking(lab: Lab, features: frozenset[str]) -> list[str]:
    """The lab's needs that a cluster offering `features` does not meet."""
    return [n for n in lab.needs if n in NEEDS and NEEDS[n][1] not in features]


# Needs without which a lab cannot run at all (rather than lose some of its checks).
ESSENTIAL_NEEDS = ("static-pods", "node-shell")


def runs_on(lab: Lab, cluster) -> bool:
    """Whether `cluster` can set the lab up and grade it (its essential needs are offered)."""
    return all(cluster.offers(NEEDS[n][1]) for n in lab.needs if n in ESSENTIAL_NEEDS)


def backend_note(lab: Lab, backend) -> str:
    """A line telling the learner which checks this cluster (or backend, by name) cannot run
    (they are left out). A cluster says what it offers now: local with real nodes offers more."""
    from .cluster import features_of

    if isinstance(backend, str):
        features = features_of(backend)
    else:
        features, backend = backend.offered(), backend.backend
    missing = [NEEDS[n][0] for n in lacking(lab, features)]
    if not missing:
        return ""
    return (f"Note: the {backend} backend lacks {' and '.join(missing)}; the checks that need it are left "
            "out and everything else is graded. For all of them: 'ckalab up --nodes real' (as root on Linux) "
            "or 'ckalab up --backend kind' on a Docker machine.")


def guard_exam(lab: Lab) -> None:
    """Feedback (check, hint, solve) is off for a running mock exam's tasks; the exam grades them itself."""
    from . import exam  # exam builds on this module

    if not lab.exam_task:
        exam.guard_practice(lab.id)


SETTLE_SECONDS = 30  # a degraded cluster gets this long to become running before a lab step gives up


def client(cluster, kube: Kube | None = None) -> Kube:
    """The caller's client, or a new one for a cluster that must be running (require_running)."""
    if kube is not None:
        return kube
    require_running(cluster)
    return Kube(cluster.kubeconfig)


def require_running(cluster) -> None:
    """Raise ClusterNotRunning, saying what to do, unless `cluster` runs.

    A stopped or absent cluster is refused at once. A degraded one gets SETTLE_SECONDS first: a
    status is a snapshot of many parts (every node's processes, the static pods' containers,
    /readyz within 2 s), and on a loaded machine (CI, load 10) one taken right after a reset had
    restored and seen healthy the API server said degraded, which nothing else ever confirmed."""
    from .cluster.base import command, up_command
    from .errors import ClusterNotRunning

    status = cluster.status()
    if status.state == "degraded":
        last = [status]

        def settled() -> bool:
            last[0] = cluster.status()
            return last[0].state != "degraded"
        try:
            wait_for(settled, SETTLE_SECONDS, f"cluster '{cluster.name}' to run again")
        except WaitTimeout:
            pass
        status = last[0]
    if status.state == "degraded":
        raise ClusterNotRunning(f"Cluster '{cluster.name}' is degraded: '{command('status', cluster.name)}' "
                                "shows what stopped and how to bring it back.")
    if status.state != "running":
        raise ClusterNotRunning(f"Cluster '{cluster.name}' is not running ({status.state}): "
                                f"run '{up_command(cluster.name)}'.")


# --- labs that break or edit the control plane (their `needs` name static-pods) ---------------

def edits_control_plane(lab: Lab) -> bool:
    """Whether the lab's setup may leave the API server down: its solve and check then work
    without it, and start and reset first give back a healthy control plane."""
    return "static-pods" in lab.needs


def restore_control_plane(cluster, timeout: float = 180) -> list[str]:
    """ckalab's static pod manifests back (an edited one is kept aside, never deleted), then wait
    until the cluster runs and /readyz answers: a broken control plane never outlives its lab."""
    restore = getattr(cluster, "restore_manifests", None)
    can = restore is not None and cluster.offers("static-pods")
    done = restore() if can else []
    # A replaced component that still runs (an edited API server that answers /readyz) looks
    # healthy until the kubelet stops it moments later: healthy means each restored component
    # runs the restored manifest's command line (read from the runtime on the node) and /readyz.
    restored = [m.group(1) for m in (re.search(r"/manifests/([\w-]+)\.yaml restored", d) for d in done) if m]

    def healthy():
        return all(cluster.runs_manifest(c) for c in restored) and cluster.status().state == "running"

    def watchers():
        # The nodes' watches of a replaced API server or etcd sit in client-go's back-off (up to
        # a minute): a NetworkPolicy stored next would wait for kube-router to list it again.
        # Their restart waits for the next lab that needs them (refresh_watchers): restarting
        # every node's kube-router after each restore (its first sync is iptables-heavy) cost
        # the control-plane labs, which restore in every case, more than their restarts.
        mark = getattr(cluster, "mark_node_watchers_stale", None)
        if mark is not None and {"kube-apiserver", "etcd"} & set(restored):
            mark()
        return done
    try:
        wait_for(healthy, min(60.0, timeout), "the API server to answer again after restoring the control plane")
        return watchers()
    except WaitTimeout:
        pass
    # Seen on real nodes: a manifest written right after an unreadable one (a tab in the YAML) was
    # missed, and the kubelet kept the old pod in back-off. A restart makes it read the folder again.
    if cluster.offers("node-shell"):
        try:
            argv, env = cluster.shell("controlplane", ["systemctl", "restart", "kubelet"])
            subprocess.run(argv, env=env, capture_output=True, timeout=60)
        except (CkalabError, OSError, subprocess.SubprocessError):
            pass  # the wait below says what is wrong
    try:
        wait_for(healthy, timeout, "the API server to answer again after restoring the control plane")
    except WaitTimeout:
        raise CkalabError(f"The control plane of '{cluster.name}' did not become healthy within {timeout:.0f} s "
                          f"after its manifests were restored.\n\n{cluster.status().render()}") from None
    return watchers()


def refresh_watchers(cluster) -> bool:
    """Restart the nodes' kube-proxy and kube-router if a restore replaced the API server or etcd
    since they last started (True then). Labs that do not edit the control plane call it first:
    their traffic and Services need watches that follow the API at once."""
    refresh = getattr(cluster, "refresh_node_watchers", None)
    return bool(refresh()) if refresh is not None else False


def contain(lab: Lab | None, cluster, restore: bool = True) -> list[str]:
    """Give back the healthy control plane a lab that edits it found. First the teardown script of
    every lab started here that has one, `lab`'s last (while the learner's API server may still
    run: e.g. Secrets encrypted with the learner's key are rewritten in plain form; ckalab's API
    server could read none of them, whichever lab comes next), then (`restore`) ckalab's
    manifests and kubelet configs. Teardowns do nothing when there is nothing of theirs to undo."""
    for other in _started_with_teardown(exclude=lab.id if lab else None):
        _run_script(other, "teardown", cluster)
    if lab is not None:
        _run_script(lab, "teardown", cluster)
    return restore_control_plane(cluster) if restore else []


def _started_with_teardown(exclude: str | None) -> list[Lab]:
    """The labs with a teardown script that were started in this home, as they were started
    (their seed: a teardown may need the variant's paths)."""
    found = []
    for lab_id in lab_ids():
        if lab_id == exclude:
            continue
        lab = load(lab_id)
        if not lab.script("teardown") or not lab.started():
            continue
        try:
            seed = json.loads((lab.workdir / MARKER).read_text()).get("seed")
        except (OSError, ValueError, AttributeError):
            seed = None
        found.append(load(lab_id, seed) if seed else lab)
    return found


def _run_script(lab: Lab, step: str, cluster) -> None:
    text = lab.script(step)
    if not text:
        return
    lab.workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig), CKALAB_CLUSTER=cluster.name, CKALAB_LAB=lab.id, CKALAB_WORKDIR=str(lab.workdir),
               CKALAB_LAB_DIR=str(lab.dir), CKALAB_PKI_DIR=str(cluster.pki_dir),
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    with tempfile.NamedTemporaryFile("w", suffix=".sh", delete=False) as f:
        f.write(text)
    try:
        proc = subprocess.run(["bash", "-euo", "pipefail", f.name], cwd=lab.workdir, env=env,
                              capture_output=True, text=True, timeout=300)
    finally:
        os.unlink(f.name)
    if proc.returncode != 0:
        raise CkalabError(f"The {step} script of lab '{lab.id}' failed (exit {proc.returncode}):\n"
                          f"{(proc.stdout + proc.stderr)[-2000:]}")


def start(lab: Lab, cluster, kube: Kube | None = None, contained: bool = False) -> Path:
    """Create the lab's preconditions (idempotent; everything carries the lab label).
    `contained`: the caller (reset) has just given the control plane back."""
    if edits_control_plane(lab):
        if not contained:  # each run of the teardowns costs about a second and 0.8 CPU-s
            contain(lab, cluster)  # its setup breaks a working control plane, not a broken one
    else:
        refresh_watchers(cluster)
    kube = client(cluster, kube)
    lab.workdir.mkdir(parents=True, exist_ok=True)
    kube.apply_all(lab.manifests("setup"), lab.label)
    _run_script(lab, "setup", cluster)
    (lab.workdir / MARKER).write_text(json.dumps({"lab": lab.id, "seed": lab.seed, "params": lab.params}))
    return lab.workdir


def solve(lab: Lab, cluster, kube: Kube | None = None) -> None:
    """Apply the reference solution (for instructors and tests; not during an exam on this lab)."""
    guard_exam(lab)
    if not (edits_control_plane(lab) and not lab.manifests("solution")):  # its API server may be down
        kube = client(cluster, kube)
        kube.apply_all(lab.manifests("solution"), lab.label)
    _run_script(lab, "solution", cluster)


def check(lab: Lab, cluster, kube: Kube | None = None):
    """Grade the learner's work (a grading.GradeResult); not during a running exam on this lab."""
    from . import grading  # grading imports this module for the lab data

    guard_exam(lab)
    if edits_control_plane(lab) and cluster.offers("static-pods") and cluster.status().state == "degraded":
        # The API server may be down (the lab broke it): its checks read the node's files then.
        return grading.grade(grading.Context(lab, cluster, kube, reuse_client=True))
    return grading.run(lab, cluster, kube)


def set_aside(workdir: Path, tag: str) -> Path | None:
    """Move a work directory that holds the learner's files to <dir>.<tag>[-n]: never delete them."""
    if not (workdir.is_dir() and any(p.name != MARKER for p in workdir.iterdir())):
        return None
    n, target = 1, workdir.with_name(f"{workdir.name}.{tag}")
    while target.exists():
        n += 1
        target = workdir.with_name(f"{workdir.name}.{tag}-{n}")
    workdir.rename(target)
    return target


# A reset's pods go from the API at once (kubectl delete --grace-period=0 --force); the kubelet
# stops their containers after. Waiting for it (a second's grace, then the kubelet's report)
# cost 2-4 s per reset on real nodes, and the learner asked for the old objects to go.
RESET_GRACE_SECONDS = 0


def reset(lab: Lab, cluster, kube: Kube | None = None, clean: bool = False) -> list[str]:
    """Remove the task's targets and every object labelled with this lab (but setup's pods that
    nobody changed and that run), then start again.

    Namespaces are never deleted (they may hold the learner's other work); objects without the
    lab label, other than the targets the task told the learner to create, are left alone.
    With `clean`, the work directory's files are moved aside (to <lab>.before-reset[-n]) first.
    """
    if edits_control_plane(lab):
        contain(lab, cluster)  # before anything that needs the API server
    else:
        refresh_watchers(cluster)
    kube = client(cluster, kube)
    if clean:
        set_aside(lab.workdir, "before-reset")
    gone: list[tuple[str, str, str, str | None]] = []
    # A pod whose process ignores SIGTERM (`sleep` as PID 1, as in the ubuntu-sleeper) would hold
    # reset for its whole grace period (30 s by default) on a node that really runs it.
    grace = {"Pod": RESET_GRACE_SECONDS}

    def delete(api_version: str, kind: str, name: str, namespace: str | None) -> None:
        key = (api_version, kind, name, namespace)
        if key not in gone and kube.delete(api_version, kind, name, namespace, grace.get(kind)):
            gone.append(key)
    for t in lab.targets:
        delete(t["apiVersion"], t["kind"], t["name"], t.get("namespace", "default"))
    setup = {_key(o): o for o in lab.manifests("setup")}
    fake_nodes: set[str] | None = None
    for api_version, kind in sorted(lab.kinds()):
        for obj in kube.list(api_version, kind, label_selector=f"{LAB_LABEL}={lab.id}"):
            key = _key(obj)  # a pod setup made and nobody changed is kept (_untouched)
            if kind == "Pod" and fake_nodes is None and key in setup:
                fake_nodes = _fake_nodes(kube)
            if not _untouched(obj, setup.get(key), lab.label, fake_nodes or set()):
                delete(api_version, kind, obj["metadata"]["name"], obj["metadata"].get("namespace"))
    # Pods and objects with finalizers linger after a delete; setup must not find them half-gone.
    wait_for(lambda: all(kube.get(*g) is None for g in gone), 60, "the lab's old objects to be deleted")
    hint_state(lab.id, reset=True)
    start(lab, cluster, kube, contained=edits_control_plane(lab))
    return [f"{kind}/{name}" for _, kind, name, _ in gone]


def _key(obj: dict) -> tuple[str, str, str, str]:
    """An object's identity; no namespace counts as `default` on both sides (apply's default for
    namespaced kinds, and the same for cluster-scoped ones, which have none)."""
    meta = obj.get("metadata") or {}
    return obj.get("apiVersion", ""), obj.get("kind", ""), meta.get("name", ""), meta.get("namespace") or "default"


def _untouched(obj: dict, wanted: dict | None, labels: dict[str, str], fake_nodes: set[str]) -> bool:
    """Whether reset may keep a lab's pod as it is: setup made it (`wanted`), nobody but ckalab
    has written it since (the kubelet's status updates aside), it still has every value setup
    gives it, and its containers run, ready, on a node that really runs them (a restarted
    container starts from its image again, as a new pod's would). Setup's apply then
    leaves it alone. On real nodes a pod deleted and made again costs a sandbox, a container,
    the CNI and a policy sync (the kubeconfig lab's 32 mutation cases: 123 -> 80 CPU-s); other
    kinds cost little to make again and are. Changes made inside a container (kubectl exec) are
    not seen here."""
    meta = obj.get("metadata") or {}
    if wanted is None or obj.get("kind") != "Pod" or meta.get("deletionTimestamp"):
        return False
    if any(m.get("manager") != FIELD_MANAGER and m.get("subresource") != "status"
           for m in meta.get("managedFields") or []):
        return False
    want = copy.deepcopy(wanted)
    want.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
    want["metadata"].pop("namespace", None)
    if not _contains(obj, want):
        return False
    status = obj.get("status") or {}
    return (status.get("phase") == "Running" and (obj.get("spec") or {}).get("nodeName") not in fake_nodes
            and all(c and c.get("ready") for c in status.get("containerStatuses") or [None]))


def _contains(have: Any, want: Any) -> bool:
    """`want`'s values all found in `have` (the API server adds defaults; lists match item by item)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(k in have and _contains(have[k], v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(have, list) and len(have) == len(want) and all(map(_contains, have, want))
    return have == want


def _fake_nodes(kube: Kube) -> set[str]:
    """Nodes where nothing really runs while the cluster has real nodes (ckalab taints them
    ckalab.io/kwok): a pod there only looks Running."""
    return {n["metadata"]["name"] for n in kube.list("v1", "Node")
            if any(t.get("key") == "ckalab.io/kwok" for t in (n.get("spec") or {}).get("taints") or [])}


def _hints_problem(data: Any) -> str | None:
    if not isinstance(data, dict):
        return f"expected an object of lab id -> hints seen, found {type(data).__name__}"
    bad = [k for k, v in data.items() if type(v) is not int or v < 0]
    return f"the count of {', '.join(map(repr, bad))} is not a whole number >= 0" if bad else None


def hint_state(lab_id: str, reset: bool = False, advance: bool = False) -> int:
    """How many hints the learner has seen for a lab (kept in $CKALAB_HOME/hints.json).

    Updated under a lock and written atomically: a notebook and a terminal (or 20 clicks at
    once) each add their hint; none overwrites another's count."""
    path = home.home() / "hints.json"

    def change(seen: dict | None) -> dict:
        seen = seen or {}
        seen[lab_id] = 0 if reset else seen.get(lab_id, 0) + (1 if advance else 0)
        return seen

    recover = f"Delete it to count every lab's hints from 0 again (rm {path})."
    return home.update_json(path, change, _hints_problem, recover, f"a hint update for {lab_id}")[lab_id]


def next_hint(lab: Lab) -> tuple[int, str]:
    """The next hint (1-based number and text); the last one repeats once all are shown."""
    guard_exam(lab)
    hints = lab.hints
    n = min(hint_state(lab.id, advance=True), len(hints))
    return n, hints[n - 1]
