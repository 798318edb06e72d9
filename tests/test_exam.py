"""Mock exam on the real cluster: set-up, no feedback while it runs, one weighted grading at the end
(text, JSON, JUnit), time-up grading, and the notebook flow."""

from __future__ import annotations

import json
import os
import shutil
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest

from ckalab import cli, exam, labs, render
from ckalab.errors import CkalabError
from conftest import kernel_config


@pytest.fixture
def fresh(cluster):
    shutil.rmtree(exam.exam_dir(), ignore_errors=True)
    yield cluster
    shutil.rmtree(exam.exam_dir(), ignore_errors=True)


def solve_task(cluster, state, lab_id):
    t = next(t for t in state["tasks"] if t["lab"] == lab_id)
    labs.solve(exam.task_lab(t), cluster)


def test_two_tasks_weighted_report(fresh, capsys):
    cluster = fresh
    t0 = time.time()
    state = exam.start(cluster, ["rbac-role", "image-pull-secrets"], duration=30, seed="exam-1", now=t0)
    rbac, pull = state["tasks"]
    assert (rbac["weight"], pull["weight"]) == (6, 5)  # from lab.yaml exam: {weight}
    # Each task in its own namespace, with the seed's names; the task text says so.
    assert rbac["params"]["namespace"] == "exam-rbac-role" and pull["params"]["namespace"] == "exam-image-pull-secrets"
    assert rbac["params"]["user"] == labs.load("rbac-role", "exam-1").params["user"]
    assert "exam-rbac-role" in exam.task_lab(rbac).task
    # No feedback while it runs: status has no report, practice verbs refuse the exam's labs.
    st, report = exam.status(cluster, now=t0 + 60)
    assert report is None
    assert "time left 0:29:00" in render.exam_tasks_text(st, exam.PASS_MARK, now=t0 + 60)
    assert cli.main(["check", "rbac-role", "--name", cluster.name]) == 2
    assert capsys.readouterr().err.strip() == (
        "error: 'rbac-role' is a task of the running mock exam: no feedback until the end. "
        "See the time left with 'ckalab exam status'; grade with 'ckalab exam finish'.")
    solve_task(cluster, state, "rbac-role")
    report = exam.finish(cluster, now=t0 + 600)
    tot = report["total"]
    assert [t["percent"] for t in report["tasks"]] == [100.0, 0.0]
    assert tot["percent"] == round(100 * 6 / 11, 1) == 54.5 and tot["passed"] is False and tot["pass_mark"] == 66
    assert report["exam"]["time_used_s"] == 600.0 and report["exam"]["ended_by"] == "finished"
    text = (exam.exam_dir() / "report.txt").read_text()
    assert text.startswith("Mock exam ") and ": 54.5% (pass mark 66%): NOT PASSED\n  time used 0:10:00 of 0:30:00 (finished)" in text
    assert "✔ 1. RBAC: a Role and RoleBinding for a developer (rbac-role): 10/10 points, 100% of weight 6" in text
    assert json.loads((exam.exam_dir() / "report.json").read_text()) == report
    root = ET.parse(exam.exam_dir() / "report.xml").getroot()
    suites = root.findall("testsuite")
    assert [s.get("name") for s in suites] == ["1. rbac-role", "2. image-pull-secrets"]
    # Every check of the untouched task fails, but one this cluster cannot run (not a failure).
    assert suites[0].get("failures") == "0" and int(suites[1].get("failures")) == len(
        [c for c in report["tasks"][1]["checks"] if c["state"] != "unavailable"])
    assert root.find("properties/property[@name='percent']").get("value") == "54.5"
    # Graded once: solving afterwards changes nothing, and practice mode is back.
    solve_task(cluster, state, "image-pull-secrets")
    assert exam.finish(cluster, now=t0 + 700) == report
    exam.guard_practice("rbac-role")


def test_time_up_grades_automatically_once(fresh):
    cluster = fresh
    t0 = time.time()
    state = exam.start(cluster, ["rbac-role"], duration=1, now=t0)
    assert exam.status(cluster, now=t0 + 59)[1] is None
    solve_task(cluster, state, "rbac-role")  # solved "in time" ...
    _, report = exam.status(cluster, now=t0 + 75)  # ... and graded at the first look after the deadline
    assert report["exam"]["ended_by"] == "time up" and report["exam"]["time_used_s"] == 60.0
    assert report["total"]["passed"] and report["total"]["percent"] == 100.0
    labs.reset(exam.task_lab(state["tasks"][0]), cluster)
    assert exam.status(cluster, now=t0 + 200)[1] == report  # not graded again


def test_all_labs_together_do_not_interfere(fresh):
    """Every lab as one exam: fresh tasks all fail; with every reference solution applied side by
    side, every task passes: no two tasks share an object."""
    cluster = fresh
    # every lab this cluster runs (of those that edit the control plane, the one the seed picks),
    # destructive ones last
    ids = exam.choose(None, None, "class-2026", cluster)
    state = exam.start(cluster, duration=120, seed="class-2026")
    assert [t["lab"] for t in state["tasks"]] == ids and set(ids) <= set(exam.valid_lab_ids())
    for t in state["tasks"]:
        labs.solve(exam.task_lab(t), cluster)
    report = exam.finish(cluster)
    bad = {t["lab"]: t["error"] or [c["message"] for c in t["checks"] if not c["passed"]]
           for t in report["tasks"] if not t["passed"]}
    assert not bad, bad
    assert report["total"]["percent"] == 100.0 and report["total"]["passed"]


def test_start_refuses_a_second_exam_and_bad_choices(fresh):
    cluster = fresh
    exam.start(cluster, ["rbac-role"], duration=10)
    with pytest.raises(Exception) as e:
        exam.start(cluster, ["rbac-role"])
    assert "An exam is already running" in str(e.value) and "--force" in str(e.value)
    assert exam.start(cluster, ["rbac-role"], duration=5, force=True)["duration_min"] == 5
    with pytest.raises(Exception) as e:
        exam.choose(["rbac-role", "nope"], None, None)
    assert str(e.value).startswith("Unknown lab(s) nope. Labs: ")
    with pytest.raises(Exception) as e:
        exam.choose(None, 0, None)
    editing = [i for i in exam.valid_lab_ids() if labs.edits_control_plane(labs.load(i))]
    assert str(e.value) == (f"--count must be between 1 and {len(exam.valid_lab_ids()) - len(editing) + 1} (the labs "
                            "one exam can hold: each lab once, and one of those that change the control plane).")
    # --count with a seed picks the same labs every time (an instructor can reproduce it).
    assert exam.choose(None, 2, "s") == exam.choose(None, 2, "s") and len(exam.choose(None, 2, "s")) == 2


def test_cli_flow(fresh, capsys):
    cluster = fresh
    n = ["--name", cluster.name]
    assert cli.main(["exam", "start", "--labs", "rbac-role", "--duration", "20", *n]) == 0
    out = capsys.readouterr().out
    assert "Mock exam " in out and "1. [ 6 of 6] RBAC: a Role and RoleBinding for a developer" in out
    assert cli.main(["exam", "status", *n]) == 0 and "time left 0:1" in capsys.readouterr().out
    assert cli.main(["exam", "task", "1", *n]) == 0
    assert capsys.readouterr().out.startswith("Task 1 (6 points of 6, ~6 min): RBAC")
    assert cli.main(["exam", "finish", "--json", *n]) == 1
    assert json.loads(capsys.readouterr().out)["total"]["percent"] == 0.0


def test_notebook_is_a_thin_caller_without_outputs():
    nb = nbformat.read(Path(__file__).parent.parent / "notebooks" / "exam.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert any("ExamPanel(" in c.source for c in code) and any("panel.report()" in c.source for c in code)


def test_notebook_runs_headless(fresh, monkeypatch, tmp_path):
    """Run all only shows the exam and its Start button (running the notebook "just to look" must
    not start a timer); Start sets the tasks up, Finish grades and renders the report."""
    from nbclient import NotebookClient

    from ckalab.widgets import ExamPanel

    cluster = fresh
    monkeypatch.setenv("CKALAB_CLUSTER", cluster.name)
    nb = nbformat.read(Path(__file__).parent.parent / "notebooks" / "exam.ipynb", as_version=4)
    for c in nb.cells:  # a short exam on one lab
        c.source = c.source.replace("LABS = None", "LABS = ['rbac-role']")
    NotebookClient(nb, timeout=120, kernel_name="python3", config=kernel_config(tmp_path)).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in outputs)
    assert any("No exam has been graded yet" in o.get("data", {}).get("text/html", "") for o in outputs)
    assert exam.load_state() is None, "running the notebook started an exam"
    # The same panel in-process: start() is the button's action, finish() the confirmation's.
    monkeypatch.setenv("KUBECONFIG", "")  # the panel points the process at the cluster; undo it afterwards
    monkeypatch.setenv("PATH", os.environ["PATH"])
    panel = ExamPanel(lab_ids=["rbac-role"], duration=10, cluster_name=cluster.name)
    state = panel.start()
    assert exam.running(state) and [t["lab"] for t in state["tasks"]] == ["rbac-role"]
    assert "The exam is still running" in panel.report().data
    assert ExamPanel(cluster_name=cluster.name).start()["id"] == state["id"]  # resumed, not a second one
    report = panel.finish()
    assert report["total"]["percent"] == 0.0 and not exam.running(exam.load_state())
    assert 'class="ckalab-exam-report" data-passed="false"' in panel.report_box.value


def test_practice_files_are_set_aside_not_deleted(fresh):
    """Files from earlier practice must not answer an exam task; they are the learner's, so they move."""
    cluster = fresh
    wd = labs.load("rbac-role").workdir
    wd.mkdir(parents=True, exist_ok=True)
    (wd / "my-notes.yaml").write_text("kind: Role\n")
    state = exam.start(cluster, ["rbac-role"], duration=10)
    assert not (wd / "my-notes.yaml").exists()
    moved = wd.with_name(f"rbac-role.before-exam-{state['id']}") / "my-notes.yaml"
    assert moved.read_text() == "kind: Role\n"


def test_a_finished_exam_written_by_an_older_ckalab_still_shows_its_report(fresh, capsys):
    """exam.json as ckalab wrote it before check states: the report's checks have only `passed`.
    `exam status` and the panel's HTML read it back as GradeResult records."""
    cluster = fresh
    old_check = {"id": "test_role_exists", "title": "Role exists", "passed": False, "points": 0, "max_points": 2,
                 "message": "Role 'developer' not found in namespace 'default'", "hint": "kubectl get roles"}
    task = {"n": 1, "lab": "rbac-role", "title": "RBAC", "seed": None, "params": {}, "weight": 6, "minutes": 6,
            "digest": "d"}
    report = {"exam": {"id": "20250101-000000", "seed": None, "cluster": cluster.name, "started_at": "s",
                       "ended_at": "e", "ended_by": "finished", "duration_min": 20, "time_used_s": 65.0,
                       "ckalab_version": "0.0.9"},
              "tasks": [{**{k: task[k] for k in ("n", "lab", "title", "weight", "minutes", "seed", "params")},
                         "score": 0, "max_score": 2, "passed": False, "duration_s": 0.3, "checks": [old_check],
                         "error": None, "percent": 0.0}],
              "total": {"percent": 0.0, "pass_mark": 66.0, "passed": False, "weight": 6, "score": 0, "max_score": 2}}
    exam.exam_dir().mkdir(parents=True)
    (exam.exam_dir() / "exam.json").write_text(json.dumps(
        {"id": "20250101-000000", "version": "0.0.9", "cluster": cluster.name, "seed": None, "started_at": 1.0,
         "duration_min": 20, "deadline": 1201.0, "tasks": [task], "report": report}))
    assert cli.main(["exam", "status", "--name", cluster.name]) == 1
    out = capsys.readouterr().out
    assert "✘ [0/2] Role exists\n        Role 'developer' not found in namespace 'default'" in out
    assert 'data-state="failed"' in render.exam_report_html(exam.load_state()["report"])


def test_labs_the_cluster_cannot_run_are_left_out_and_destructive_ones_come_last(cluster):
    """On kwok nodes the control-plane labs cannot run: never chosen, and asking for one says why
    (test_kwok_fallback proves it when the session runs on real nodes). Where they can run, a lab
    that breaks the control plane comes after the others."""
    if not cluster.offers("static-pods"):
        chosen = exam.choose(None, None, None, cluster)
        assert "apiserver-repair" not in chosen and "rbac-role" in chosen
        with pytest.raises(CkalabError, match="need real nodes"):
            exam.choose(["rbac-role", "apiserver-repair"], None, None, cluster)
    else:
        assert exam.choose(["apiserver-repair", "rbac-role"], None, None, cluster) == ["rbac-role", "apiserver-repair"]
    assert exam.choose(["apiserver-repair", "rbac-role"], None, None) == ["rbac-role", "apiserver-repair"]


def test_an_exam_holds_one_lab_that_edits_the_control_plane():
    """Each control-plane lab's setup starts from ckalab's control plane and its solution expects
    only its own change: asking for two is refused by name, and every pick (all labs, or --count)
    holds exactly one, the same one for the same seed."""
    known = exam.valid_lab_ids()
    editing = [i for i in known if labs.edits_control_plane(labs.load(i))]
    assert len(editing) >= 2, editing
    with pytest.raises(CkalabError) as e:
        exam.choose(["rbac-role", editing[1], editing[0]], None, None)
    assert str(e.value) == (
        f"Labs {editing[1]}, {editing[0]} all change the control plane (its static pod manifests, certificates or "
        "kubelet config), and each one starts from ckalab's own: one exam on one cluster can hold one of them. "
        "Keep one (the others make exams of their own).")
    assert exam.choose(["rbac-role", editing[0]], None, None) == ["rbac-role", editing[0]]
    everything = exam.choose(None, None, "class-2026")
    assert everything == exam.choose(None, None, "class-2026")
    assert len(set(everything) & set(editing)) == 1
    assert set(known) - set(editing) <= set(everything)
    picks = {i for seed in range(12) for i in exam.choose(None, None, str(seed)) if i in editing}
    assert len(picks) > 1, picks  # the seed decides which one, not always the same lab
    for seed in range(8):
        chosen = exam.choose(None, len(known) - len(editing) + 1, f"s{seed}")
        assert len(set(chosen) & set(editing)) == 1 and len(chosen) == len(set(chosen))
