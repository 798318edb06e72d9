"""Mock exam: several labs set up at once, a timer, and one grading at the end.

State lives in $CKALAB_HOME/exam/: `exam.json` (the tasks with their resolved parameters, start
time and deadline) and, once graded, `report.txt`, `report.json` and `report.xml` (JUnit).
As in the real exam there is no feedback while the timer runs: `status` shows only the time
left and the task list, and the practice verbs (check, hint, solve) refuse the exam's labs.
Grading happens exactly once, on `finish` or on the first `status`/`finish` after the deadline.

Tasks must not interfere: a lab whose `namespace` parameter is the shared `default` namespace
gets its own namespace `exam-<lab-id>` for the exam, and `start` refuses a task list in which
two labs would create the same object.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from datetime import datetime, timezone
from pathlib import Path

from . import __version__, home, labs, render
from .errors import CkalabError, ClusterNotRunning
from .grading import GradeResult

DEFAULT_WEIGHT = 5     # a typical CKA task weight (%), for labs without `exam: {weight}`
DEFAULT_MINUTES = 8
DEFAULT_DURATION = 120  # minutes, as the real exam
PASS_MARK = 66.0       # percent
EXAM_LABEL = "ckalab.io/exam"


def exam_dir() -> Path:
    return home.home() / "exam"


def _state_path() -> Path:
    return exam_dir() / "exam.json"


def _state_problem(state) -> str | None:
    """What is wrong with the content of exam.json, or None when it can be used."""
    if not isinstance(state, dict):
        return f"expected an object, found {type(state).__name__}"
    numbers = ("started_at", "deadline", "duration_min")
    bad = [k for k in numbers if type(state.get(k)) not in (int, float)]
    if bad:
        return f"{', '.join(bad)} must be numbers"
    tasks = state.get("tasks")
    keys = {"n": int, "lab": str, "title": str, "params": dict, "weight": int, "minutes": int}
    if not isinstance(tasks, list) or not tasks or not all(
            isinstance(t, dict) and all(isinstance(t.get(k), ty) for k, ty in keys.items()) for t in tasks):
        return "'tasks' must be a list of tasks, each with n, lab, title, params, weight and minutes"
    if not isinstance(state.get("id"), str) or not isinstance(state.get("report") or {}, dict):
        return "'id' must be a string and 'report' an object"
    return None


def load_state() -> dict | None:
    """The exam state, None before the first exam; a damaged file is an error naming it."""
    path = _state_path()
    recover = (f"Move it aside (mv {path} {path}.damaged) and start a new exam with 'ckalab exam start'; "
               "the exam it recorded cannot be graded.")
    return home.read_state(path, _state_problem, recover)


def _save(state: dict) -> None:
    exam_dir().mkdir(parents=True, exist_ok=True)
    tmp = _state_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(_state_path())


# --- tasks ------------------------------------------------------------------------------------

def task_lab(task: dict) -> labs.Lab:
    """The Lab of an exam task, with the parameters recorded at `start` (namespace included)."""
    lab = labs.load(task["lab"], task["seed"])
    return dataclasses.replace(lab.with_params(**{k: v for k, v in task["params"].items() if k in lab.params}),
                               exam_task=True)


# --- lifecycle -------------------------------------------------------------------------------

def running(state: dict | None) -> bool:
    return bool(state) and not state.get("report")


def valid_lab_ids() -> list[str]:
    """Labs whose data loads (a lab being written may be incomplete; `ckalab validate` says why)."""
    ok = []
    for i in labs.lab_ids():
        try:
            labs.load(i)
            ok.append(i)
        except CkalabError:
            pass
    return ok


def choose(lab_ids: list[str] | None, count: int | None, seed: str | None, cluster=None) -> list[str]:
    """The exam's labs in teaching order, except that labs which break the control plane come
    last (one left broken must not stop the others); only labs `cluster` can run, and at most
    one lab that edits the control plane (see _one_control_plane_lab)."""
    known = valid_lab_ids()
    runnable = [i for i in known if cluster is None or labs.runs_on(labs.load(i), cluster)]
    if lab_ids:
        unknown = [i for i in lab_ids if i not in known]
        if unknown:
            raise CkalabError(f"Unknown lab(s) {', '.join(unknown)}. Labs: {', '.join(known)}")
        cannot = [i for i in lab_ids if i not in runnable]
        if cannot:
            raise CkalabError(f"Lab(s) {', '.join(cannot)} need real nodes (a control plane run as static pods): "
                              f"'ckalab up --nodes real' as root, or leave them out.")
        lab_ids = list(dict.fromkeys(lab_ids))
        editing = [i for i in lab_ids if _edits_control_plane(i)]
        if len(editing) > 1:
            raise CkalabError(f"Labs {', '.join(editing)} all change the control plane (its static pod manifests, "
                              "certificates or kubelet config), and each one starts from ckalab's own: one exam "
                              "on one cluster can hold one of them. Keep one (the others make exams of their own).")
        return _destructive_last(lab_ids)
    # A seed makes the selection reproducible too; without one it is random, and recorded.
    rng = random.Random(f"{seed}/exam") if seed is not None else random.SystemRandom()
    pool = _one_control_plane_lab(runnable, rng)
    if count is None:
        return _destructive_last(pool)
    if not 1 <= count <= len(pool):
        raise CkalabError(f"--count must be between 1 and {len(pool)} (the labs one exam can hold: each lab "
                          "once, and one of those that change the control plane).")
    picked = set(rng.sample(pool, count))
    return _destructive_last([i for i in pool if i in picked])  # teaching order


def _edits_control_plane(lab_id: str) -> bool:
    return labs.edits_control_plane(labs.load(lab_id))


def _one_control_plane_lab(lab_ids: list[str], rng: random.Random) -> list[str]:
    """`lab_ids` with one of those that edit the control plane, picked by `rng`. Each such lab's
    setup first gives back ckalab's control plane (labs.contain) and then breaks or changes it
    in its own way, and its reference solution expects only its own change: two in one exam
    would undo or block each other (an expired serving certificate keeps a repaired API server
    from ever answering). The real exam gives such tasks a cluster of their own too."""
    editing = [i for i in lab_ids if _edits_control_plane(i)]
    keep = rng.choice(editing) if editing else None
    return [i for i in lab_ids if i == keep or i not in editing]


def _destructive_last(lab_ids: list[str]) -> list[str]:
    return sorted(lab_ids, key=_edits_control_plane)


def start(cluster, lab_ids: list[str] | None = None, count: int | None = None,
          duration: float = DEFAULT_DURATION, seed: str | None = None, force: bool = False,
          now: float | None = None) -> dict:
    """Set up the chosen labs as exam tasks and start the timer; returns the exam state."""
    now = time.time() if now is None else now
    old = load_state()
    if running(old) and not force:
        left = old["deadline"] - now
        raise CkalabError(
            f"An exam is already running ({render.clock(left)} left, started {render.iso(old['started_at'])}). "
            "Finish it with 'ckalab exam finish', or start a new one with --force (the old one is "
            "dropped without a grade).")
    if duration <= 0:
        raise CkalabError("--duration must be a positive number of minutes.")
    chosen = choose(lab_ids, count, seed, cluster)
    tasks, owner = [], {}
    for n, lab_id in enumerate(chosen, 1):
        lab = labs.load(lab_id, seed)
        if lab.params.get("namespace") == "default":
            lab = lab.with_params(namespace=f"exam-{lab.id}")
        for key in lab.footprint():
            if key in owner:
                raise CkalabError(f"Labs '{owner[key]}' and '{lab.id}' would both use {key[0]} '{key[2]}'"
                                  f"{' in ' + key[1] if key[1] else ''}; pick other labs or another --seed.")
            owner[key] = lab.id
        exam = lab.data.get("exam") or {}
        tasks.append({"n": n, "lab": lab.id, "title": lab.title, "seed": seed, "params": lab.params,
                      "weight": int(exam.get("weight", DEFAULT_WEIGHT)),
                      "minutes": int(exam.get("minutes", DEFAULT_MINUTES)), "digest": lab.files_digest()})
    exam_id = datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%d-%H%M%S")
    kube = labs.client(cluster)  # refuses a stopped cluster with its name
    for t in tasks:
        lab = task_lab(t)
        labs.set_aside(lab.workdir, f"before-exam-{exam_id}")  # practice files must not answer a task
        ns = t["params"].get("namespace")
        if ns and ns.startswith("exam-") and kube.get("v1", "Namespace", ns) is None:
            kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
                       {EXAM_LABEL: "true"})
        labs.reset(lab, cluster, kube)  # a fresh task: earlier practice on this lab does not count
    state = {"id": exam_id,
             "version": __version__, "cluster": cluster.name, "seed": seed, "started_at": now,
             "duration_min": duration, "deadline": now + duration * 60, "tasks": tasks}
    for stale in ("report.txt", "report.json", "report.xml"):
        (exam_dir() / stale).unlink(missing_ok=True)
    _save(state)
    return state


def status(cluster, now: float | None = None) -> tuple[dict, dict | None]:
    """The exam state and, when time is up (graded now if not yet) or it is finished, the report."""
    now = time.time() if now is None else now
    state = current()
    if running(state) and now >= state["deadline"]:
        return state, finish(cluster, now=now, reason="time up")
    return state, state.get("report")


def finish(cluster, now: float | None = None, reason: str = "finished") -> dict:
    """Grade every task once and write the report; later calls return the same report."""
    now = time.time() if now is None else now
    state = current()
    if state.get("report"):
        return state["report"]
    if now >= state["deadline"]:
        reason = "time up"
    # A task that breaks the control plane may be left broken: it is graded from the node, and
    # the control plane is restored afterwards (never outliving the exam).
    destructive = any(labs.edits_control_plane(task_lab(t)) for t in state["tasks"])
    _require_running(cluster, "", allow_degraded=destructive)
    report = grade(state, cluster, min(now, state["deadline"]), reason)
    for t in state["tasks"]:
        if labs.edits_control_plane(task_lab(t)):
            labs.contain(task_lab(t), cluster)
    # A cluster that died while grading turns every later check into a failure: that is no grade.
    _require_running(cluster, " while the exam was being graded")
    state["report"] = report
    _save(state)
    write_reports(report, exam_dir())
    return report


def _require_running(cluster, when: str, allow_degraded: bool = False) -> None:
    """Grading reads the cluster: a stopped one would score every task 0%, and a report is final."""
    st = cluster.status()
    if st.state != "running" and not (allow_degraded and st.state == "degraded"):
        from .cluster.base import up_command

        raise ClusterNotRunning(
            f"The exam is not graded: cluster '{cluster.name}' is {st.state}{when}, and every check reads "
            f"it. Start it with '{up_command(cluster.name)}', then run 'ckalab exam finish' again; until "
            "then the exam stays open.")


def grade(state: dict, cluster, ended_at: float, reason: str) -> dict:
    out_tasks = []
    for t in state["tasks"]:
        entry = {k: t[k] for k in ("n", "lab", "title", "weight", "minutes", "seed", "params")}
        try:
            r, error = labs.check(task_lab(t), cluster), None  # the exam's own copy: allowed while it runs
        except ClusterNotRunning:
            raise  # not the task's fault: finish refuses and the exam stays open
        except CkalabError as exc:  # a grader that cannot run costs the task, not the report
            r, error = GradeResult(t["lab"], False, 0, 0, 0.0, [], t["seed"]), str(exc)
        # The task entry is the GradeResult's own record (render reads it back with from_dict).
        entry.update({k: v for k, v in r.to_dict().items() if k not in entry}, error=error)
        entry["percent"] = round(100.0 * entry["score"] / entry["max_score"], 1) if entry["max_score"] else 0.0
        out_tasks.append(entry)
    weights = sum(t["weight"] for t in out_tasks) or 1
    percent = round(sum(t["weight"] * t["percent"] for t in out_tasks) / weights, 1)
    return {
        "exam": {"id": state["id"], "seed": state["seed"], "cluster": state["cluster"],
                 "started_at": render.iso(state["started_at"]), "ended_at": render.iso(ended_at), "ended_by": reason,
                 "duration_min": state["duration_min"],
                 "time_used_s": round(ended_at - state["started_at"], 1), "ckalab_version": __version__},
        "tasks": out_tasks,
        "total": {"percent": percent, "pass_mark": PASS_MARK, "passed": percent >= PASS_MARK,
                  "weight": weights, "score": sum(t["score"] for t in out_tasks),
                  "max_score": sum(t["max_score"] for t in out_tasks)},
    }


def guard_practice(lab_id: str) -> None:
    """Practice feedback (check, hint, solve) is off for the exam's labs while the exam runs."""
    state = load_state()
    if running(state) and any(t["lab"] == lab_id for t in state["tasks"]):
        raise CkalabError(f"'{lab_id}' is a task of the running mock exam: no feedback until the end. "
                          "See the time left with 'ckalab exam status'; grade with 'ckalab exam finish'.")


# --- reading the state ---------------------------------------------------------------------------

def current() -> dict:
    """The exam state; a CkalabError before the first exam."""
    state = load_state()
    if not state:
        raise CkalabError("No exam has been started: run 'ckalab exam start'.")
    return state


def find_task(state: dict, n: int) -> dict:
    """Task `n` of the exam (numbered from 1)."""
    for t in state["tasks"]:
        if t["n"] == n:
            return t
    raise CkalabError(f"No task {n}: the exam has tasks 1 to {len(state['tasks'])}.")


def write_reports(report: dict, out: Path) -> list[Path]:
    """report.txt, report.json and report.xml (JUnit) of a graded exam, into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"report.txt": render.exam_report_text(report) + "\n",
             "report.json": json.dumps(report, indent=2) + "\n", "report.xml": render.exam_junit(report)}
    for name, text in files.items():
        (out / name).write_text(text)
    return [out / n for n in files]
