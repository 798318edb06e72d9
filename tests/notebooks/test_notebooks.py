"""Every notebook runs headless (nbclient) against the real test cluster, in both modes.

Solution mode (CKALAB_NOTEBOOK_MODE=solution): the lab bar applies the reference solution where
the learner's cells are, so the notebook's own Check must pass with full score. Normal mode: the
learner cells are empty, so the same Check must report the task unfinished. Either way no cell
may error. The notebook's Check writes its GradeResult to CKALAB_NOTEBOOK_RESULT, which we read.
"""

from __future__ import annotations

import html
import json
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient

from ckalab import labs

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "notebooks"
NOTEBOOKS = REPO / "notebooks"
sys.path.insert(0, str(NOTEBOOKS / "_source"))
import build  # noqa: E402  (the notebook generator)

# notebook -> lab id, in teaching order (the number is the lab's `order` in lab.yaml)
LAB_NOTEBOOKS = {
    "03-tls-certificates": "tls-certificates",
    "04-cluster-pki": "cluster-pki",
    "05-rbac-role": "rbac-role",
    "06-csr-approval": "csr-approval",
    "07-kubeconfig": "kubeconfig",
    "08-rbac-clusterrole": "rbac-clusterrole",
    "09-service-accounts": "service-accounts",
    "10-image-pull-secrets": "image-pull-secrets",
    "11-security-contexts": "security-contexts",
    "12-network-policies": "network-policies",
    "13-security-quiz": "security-quiz",
}
CONCEPT_NOTEBOOKS = ["00-welcome", "01-security-primitives", "02-tls-basics"]


def _lab_or_skip(lab_id: str):
    if not (labs.labs_root() / lab_id / "lab.yaml").is_file():
        pytest.skip(f"lab '{lab_id}' does not exist yet (no labs/{lab_id}/lab.yaml)")
    return labs.load(lab_id)


def _notebook(name: str) -> Path:
    path = NOTEBOOKS / f"{name}.ipynb"
    assert path.is_file(), f"{path} is missing: write notebooks/_source/{name}.md and run build.py"
    return path


def execute(path: Path, cluster_name: str, mode: str, tmp_path: Path, monkeypatch, seed: str | None = None):
    """Run the notebook top to bottom in a fresh kernel; return (notebook, recorded result)."""
    result_file = tmp_path / f"{path.stem}-{mode}.json"
    monkeypatch.setenv("CKALAB_CLUSTER", cluster_name)
    monkeypatch.setenv("CKALAB_NOTEBOOK_MODE", mode)
    monkeypatch.setenv("CKALAB_NOTEBOOK_RESULT", str(result_file))
    if seed is None:
        monkeypatch.delenv("CKALAB_SEED", raising=False)
    else:
        monkeypatch.setenv("CKALAB_SEED", seed)
    nb = nbformat.read(path, as_version=4)
    # Raises CellExecutionError (failing the test) on the first cell that errors.
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    ARTIFACTS.mkdir(exist_ok=True)  # the executed notebook, for a look after a failure
    nbformat.write(nb, ARTIFACTS / f"{path.stem}-{mode}.ipynb")
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    return nb, result


# What kubectl, bash and openssl print when a command in an example failed. `!` lines do not
# raise, so without this a broken worked example would go unnoticed.
COMMAND_ERRORS = ("Error from server", "error: ", "command not found", "No such file", "unable to load")


def assert_examples_ran(nb) -> None:
    text = outputs_text(nb)
    found = [e for e in COMMAND_ERRORS if e in text]
    assert not found, f"a shell command in the notebook failed ({found}):\n{text[-3000:]}"


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            for key in ("text/plain", "text/html", "text/markdown"):
                parts.append(html.unescape(str(out.get("data", {}).get(key, ""))))
    return "\n".join(parts)


def test_notebook_set_is_complete():
    """One notebook per lab under the name the lab's `order` gives, plus the welcome notebook."""
    names = {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    assert "00-welcome" in names
    for lab_yaml in sorted(labs.labs_root().glob("*/lab.yaml")):
        data = yaml.safe_load(lab_yaml.read_text())  # raw: a lab still missing its grader counts too
        expected = f"{data['order']:02d}-{data['id']}"
        assert expected in names, f"lab '{data['id']}' (order {data['order']}) has no notebook {expected}.ipynb"
        assert LAB_NOTEBOOKS.get(expected) == data["id"], f"{expected} is not in LAB_NOTEBOOKS"


def test_notebooks_are_built_from_source():
    assert build.main(["--check"]) == 0


@pytest.mark.parametrize("name", list(LAB_NOTEBOOKS))
def test_solution_mode_passes(name, cluster, lab_harness, tmp_path, monkeypatch):
    lab = _lab_or_skip(LAB_NOTEBOOKS[name])
    lab_harness(lab.id)  # a fresh lab: reset, empty work dir
    nb, result = execute(_notebook(name), cluster.name, "solution", tmp_path, monkeypatch)
    assert result is not None, "the notebook's Check did not run"
    assert result["lab"] == lab.id
    failed = [f"{c['title']}: {c['message']}" for c in result["checks"] if not c["passed"]]
    assert result["passed"] and not failed, failed
    assert result["score"] == result["max_score"] > 0
    text = outputs_text(nb)
    assert f"Score {result['max_score']}/{result['max_score']}: All checks passed" in text
    assert lab.task.strip().splitlines()[0] in text, "the task text was not shown"
    assert_examples_ran(nb)


@pytest.mark.parametrize("name", list(LAB_NOTEBOOKS))
def test_normal_mode_reports_unfinished(name, cluster, lab_harness, tmp_path, monkeypatch):
    lab = _lab_or_skip(LAB_NOTEBOOKS[name])
    lab_harness(lab.id)
    nb, result = execute(_notebook(name), cluster.name, "learn", tmp_path, monkeypatch)
    assert result is not None, "the notebook's Check did not run"
    assert result["lab"] == lab.id
    assert not result["passed"]
    assert result["score"] < result["max_score"]
    assert 'data-passed="false"' in outputs_text(nb)
    assert_examples_ran(nb)


@pytest.mark.parametrize("name", CONCEPT_NOTEBOOKS)
def test_concept_notebook_runs(name, cluster, tmp_path, monkeypatch):
    nb, _ = execute(_notebook(name), cluster.name, "learn", tmp_path, monkeypatch)
    assert_examples_ran(nb)
    if name == "00-welcome":
        text = outputs_text(nb)
        assert f"Cluster '{cluster.name}' (local backend) is running." in text
        assert "node01" in text  # !kubectl get nodes reached the lab cluster
        assert "rbac-role" in text  # !ckalab labs


def test_variant_task_and_solution_follow_the_seed(cluster, lab_harness, tmp_path, monkeypatch):
    """With CKALAB_SEED the notebook shows that variant's names and its solution passes."""
    seed = "student-42"
    lab = lab_harness("rbac-role", seed).lab
    assert lab.params != labs.load("rbac-role").params, "pick a seed whose variant differs from the defaults"
    nb, result = execute(_notebook("05-rbac-role"), cluster.name, "solution", tmp_path, monkeypatch, seed=seed)
    assert result["passed"] and result["seed"] == seed
    text = outputs_text(nb)
    assert f"Create a Role named `{lab.params['role']}`" in text
    assert f"the user **{lab.params['user']}**" in text


def test_stopped_cluster_says_how_to_start(cluster, tmp_path, monkeypatch):
    """With no cluster the notebook still runs; the bar says to run `ckalab up` instead of failing."""
    name = "ckalab-never-started"
    nb, result = execute(_notebook("05-rbac-role"), name, "solution", tmp_path, monkeypatch)
    assert result is None  # nothing could be graded
    text = outputs_text(nb)
    assert f"Cluster '{name}' (local backend) is absent. Start it in a terminal with: ckalab up --name {name}" in text
    assert f"Cluster '{name}' is not running (absent): run 'ckalab up --name {name}'." in text


def test_checker_accepts_the_committed_notebooks_and_flags_run_state(tmp_path):
    sys.path.insert(0, str(REPO / "tools"))
    import check_notebooks

    assert check_notebooks.main([]) == 0
    nb = nbformat.read(_notebook("05-rbac-role"), as_version=4)
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.execution_count = 3
    code.outputs = [nbformat.v4.new_output("stream", text="hello")]
    dirty = tmp_path / "dirty.ipynb"
    nbformat.write(nb, dirty)
    assert check_notebooks.problems(dirty) == [f"{dirty}: cell 1 ({code.id}): has outputs",
                                               f"{dirty}: cell 1 ({code.id}): has execution_count 3"]
    assert check_notebooks.main([str(dirty)]) == 1
