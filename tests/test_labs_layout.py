"""One lab folder layout (every file named by lab.yaml, the README's tables generated from the
schema), one lifecycle API (variants and footprint on the Lab, the exam guard inside it) and a
package that finds its labs when installed from a wheel, outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import yaml

from ckalab import exam, labs, results
from ckalab.errors import CkalabError

REPO = Path(__file__).resolve().parents[1]
MINIMAL = {"apiVersion": "ckalab/v1", "id": "tidy", "title": "Tidy", "order": 1, "topic": "x",
           "task": "task.md", "hints": ["h"], "solution": {"script": "solution/solve.sh"}}


def _lab_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    d = tmp_path / "tidy"
    for rel, text in {"task.md": "Do it.\n", "solution/solve.sh": "true\n", **files}.items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    return d


def _problems(d: Path, data: dict) -> list[str]:
    # The grader check is about the catalogue, not the layout: leave it out of these cases.
    return [p for p in labs.validate(d, data) if "no grader at" not in p]


# --- layout ----------------------------------------------------------------------------------

def test_every_catalogue_lab_has_the_one_layout():
    assert labs.validate_all() == []
    for lab_id in labs.lab_ids():
        lab = labs.load(lab_id)
        for step, script in labs.STEP_SCRIPT.items():
            assert lab.data.get(step, {}).get("script") in (None, script), (lab_id, step)


def test_a_tidy_lab_folder_has_no_problems(tmp_path):
    d = _lab_dir(tmp_path, {"data/q.yaml": "[]\n", "setup/setup.sh": "true\n", "setup/cm.yaml": "{}\n"})
    data = {**MINIMAL, "data": {"q": "data/q.yaml"},
            "setup": {"manifests": ["setup/cm.yaml"], "script": "setup/setup.sh",
                      "creates": [{"apiVersion": "v1", "kind": "Pod"}]}}
    assert _problems(d, data) == []


def test_unnamed_misplaced_and_missing_files_are_reported(tmp_path):
    d = _lab_dir(tmp_path, {"questions.yaml": "[]\n", "setup.sh": "true\n", "notes.txt": "mine\n"})
    data = {**MINIMAL, "setup": {"script": "setup.sh", "creates": ["Pod"]},
            "solution": {"script": "solution/solve.sh", "manifests": ["solution/gone.yaml"]},
            "data": {"questions": "questions.yaml"}}
    where = d / "lab.yaml"
    assert _problems(d, data) == [
        f"{where}: setup.script is 'setup.sh'; the layout wants 'setup/setup.sh'",
        f"{where}: setup.creates lists {{apiVersion, kind}} mappings",
        f"{where}: data.questions should be a file under data/, not 'questions.yaml'",
        f"{where}: 'notes.txt' is in the lab folder but lab.yaml does not name it",
        f"{where}: 'questions.yaml' is in the lab folder but lab.yaml does not name it",
        f"{where}: file 'solution/gone.yaml' does not exist",
    ]


def test_a_manifest_outside_its_step_folder_and_another_task_file(tmp_path):
    d = _lab_dir(tmp_path, {"README.md": "x\n", "solution/rbac.yaml": "{}\n"})
    data = {**MINIMAL, "task": "README.md", "setup": {"manifests": ["solution/rbac.yaml"]}}
    where = d / "lab.yaml"
    problems = _problems(d, data)
    assert f"{where}: setup file 'solution/rbac.yaml' belongs in the folder setup/" in problems
    assert f"{where}: task is 'README.md'; the layout wants 'task.md'" in problems
    assert f"{where}: 'task.md' is in the lab folder but lab.yaml does not name it" in problems


def test_a_teardown_is_one_script_in_its_folder(tmp_path):
    d = _lab_dir(tmp_path, {"teardown/teardown.sh": "true\n", "teardown/undo.yaml": "{}\n"})
    where = d / "lab.yaml"
    assert _problems(d, {**MINIMAL, "teardown": {"script": "teardown/teardown.sh"},
                         "data": {"undo": "teardown/undo.yaml"}}) == [
        f"{where}: data.undo should be a file under data/, not 'teardown/undo.yaml'",
        f"{where}: 'teardown/undo.yaml' is in the lab folder but lab.yaml does not name it"]
    assert _problems(d, {**MINIMAL, "teardown": {"script": "teardown/undo.sh", "manifests": ["teardown/undo.yaml"]}}) == [
        f"{where}: teardown.script is 'teardown/undo.sh'; the layout wants 'teardown/teardown.sh'",
        f"{where}: teardown.manifests: a teardown is only a script (teardown.script)",
        f"{where}: 'teardown/teardown.sh' is in the lab folder but lab.yaml does not name it",
        f"{where}: 'teardown/undo.yaml' is in the lab folder but lab.yaml does not name it",
        f"{where}: file 'teardown/undo.sh' does not exist"]


def test_readme_schema_tables_are_generated_from_the_schema(tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    try:
        import schema_table
    finally:
        sys.path.remove(str(REPO / "tools"))
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "schema_table.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = (REPO / "labs" / "README.md").read_text()
    for name in [*labs.FIELDS, *labs.STEP_FIELDS, *labs.LAYOUT]:
        assert f"| `{name}` |" in text
    stale = text.replace("| `creates` |", "| `made` |")
    assert schema_table.render(stale) == text  # the generator puts back what the schema says


def test_data_files_are_found_through_lab_yaml():
    quiz = labs.load("security-quiz")
    assert quiz.data_file("questions") == quiz.dir / "data" / "questions.yaml"
    with pytest.raises(CkalabError, match="Lab 'rbac-role' names no data file 'questions'"):
        labs.load("rbac-role").data_file("questions")


# --- variants and footprint on the Lab -------------------------------------------------------

def test_variant_and_with_params_keep_everything_else():
    base = labs.load("rbac-role")
    v = base.variant("student-7")
    assert v.params == labs.load("rbac-role", "student-7").params and v.seed == "student-7"
    assert base.variant(None).params == base.params  # the defaults
    moved = v.with_params(namespace="elsewhere")
    assert moved.seed == "student-7" and moved.params == {**v.params, "namespace": "elsewhere"}
    assert "elsewhere" in moved.task and v.params["namespace"] == "default"  # v is not changed


def test_footprint_and_swept_kinds_come_from_the_lab():
    role = labs.load("rbac-role").with_params(namespace="exam-rbac-role")
    assert ("Role", "exam-rbac-role", "developer") in role.footprint()
    assert all(kind != "Namespace" for kind, _, _ in role.footprint())
    rbac = "rbac.authorization.k8s.io/v1"
    assert role.kinds() == {(rbac, "Role"), (rbac, "RoleBinding")}
    # Objects a script creates are named by the step's `creates`.
    assert ("certificates.k8s.io/v1", "CertificateSigningRequest") in labs.load("csr-approval").kinds()
    for lab in labs.catalogue():
        assert {(t["apiVersion"], t["kind"]) for t in lab.targets} <= lab.kinds(), lab.id


def test_notebook_sources_exist_for_every_lab():
    """The registry the notebook tests need is the lab data: each lab's order and id name its notebook."""
    names = {p.stem for p in (REPO / "notebooks" / "_source").glob("*.md")}
    for lab in labs.catalogue():
        assert f"{lab.order:02d}-{lab.id}" in names, lab.id


# --- the exam guard lives in the lifecycle ---------------------------------------------------

@pytest.fixture
def running_exam():
    """An exam state on disk with rbac-role as its task (no cluster needed to refuse feedback)."""
    shutil.rmtree(exam.exam_dir(), ignore_errors=True)
    now = time.time()
    exam._save({"id": "guard", "seed": None, "cluster": "x", "started_at": now, "duration_min": 30,
                "deadline": now + 1800, "tasks": [{"n": 1, "lab": "rbac-role", "title": "t", "seed": None,
                                                    "params": {}, "weight": 1, "minutes": 1}]})
    yield
    shutil.rmtree(exam.exam_dir(), ignore_errors=True)


REFUSED = "'rbac-role' is a task of the running mock exam: no feedback until the end."


class Unreachable:
    """A cluster the guard must refuse before touching."""
    name = backend = "never"

    def status(self):
        raise AssertionError("the cluster was used although the exam guard should refuse first")


def test_results_submit_refuses_a_running_exams_task(running_exam, tmp_path):
    key = results.new_key(tmp_path / "course.key")
    with pytest.raises(CkalabError, match=REFUSED):
        results.submit("ana", Unreachable(), tmp_path / "bundle.json", key, lab_ids=["rbac-role"])
    assert not (tmp_path / "bundle.json").exists()


def test_solve_check_and_hint_refuse_a_running_exams_task(running_exam):
    lab = labs.load("rbac-role")
    for verb in (lambda: labs.solve(lab, Unreachable()), lambda: labs.check(lab, Unreachable()),
                 lambda: labs.next_hint(lab)):
        with pytest.raises(CkalabError, match=REFUSED):
            verb()
    # The exam's own copy is not practice: the exam sets it up and grades it.
    task = exam.task_lab(exam.load_state()["tasks"][0])
    assert task.exam_task
    labs.guard_exam(task)


# --- installed from a wheel, run outside the checkout ----------------------------------------

def test_a_wheel_install_finds_its_labs_outside_the_checkout(tmp_path):
    src = tmp_path / "src"  # a copy: building in the checkout would leave build/ behind
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in"):
        shutil.copy(REPO / name, src / name)
    for name in ("ckalab", "labs", "graders", "kind", "notebooks"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "_data", ".*"))
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)], check=True,
                   cwd=tmp_path, capture_output=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("ckalab-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    subprocess.run([*pip, "--python", str(venv / "bin" / "python"), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=600)
    # Dependencies from this venv's site-packages; its editable ckalab is not seen (.pth files
    # on PYTHONPATH are not processed), so the installed copy is the one that runs.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CKALAB_LABS", "CKALAB_GRADERS", "CKALAB_DATA"))}
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def ckalab(*args):
        return subprocess.run([str(venv / "bin" / "ckalab"), *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=120)

    listed, valid, copied = ckalab("labs"), ckalab("validate"), ckalab("notebooks", "--dir", str(elsewhere / "nb"))
    assert listed.returncode == 0 and "rbac-role" in listed.stdout, listed.stderr
    assert copied.returncode == 0 and (elsewhere / "nb" / "00-welcome.ipynb").is_file(), copied.stdout + copied.stderr
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert f"{len(labs.lab_ids())} labs, 0 problems" in valid.stdout
    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import json; from ckalab import labs; from ckalab.cluster import kind; "
                            "print(json.dumps([str(labs.labs_root()), str(kind.CONFIG), kind.CONFIG.is_file()]))"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    labs_dir, kind_config, kind_found = json.loads(where.stdout)
    assert labs_dir.startswith(str(venv)) and kind_config.startswith(str(venv)) and kind_found
    assert yaml.safe_load(Path(labs_dir, "rbac-role", "lab.yaml").read_text())["id"] == "rbac-role"
