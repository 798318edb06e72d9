"""Every notebook runs headless (nbclient) against the real test cluster, in both modes.

Solution mode (CKALAB_NOTEBOOK_MODE=solution): the lab bar applies the reference solution where
the learner's cells are, so the notebook's own Check must pass with full score. Normal mode: the
learner cells are empty, so the same Check must report the task unfinished. Either way no cell
may error. The notebook's Check writes its GradeResult to CKALAB_NOTEBOOK_RESULT, which we read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from ckalab import labs

REPO = Path(__file__).resolve().parents[2]
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


def execute(path: Path, cluster_name: str, mode: str, tmp_path: Path, monkeypatch):
    """Run the notebook top to bottom in a fresh kernel; return (notebook, recorded result)."""
    result_file = tmp_path / f"{path.stem}-{mode}.json"
    monkeypatch.setenv("CKALAB_CLUSTER", cluster_name)
    monkeypatch.setenv("CKALAB_NOTEBOOK_MODE", mode)
    monkeypatch.setenv("CKALAB_NOTEBOOK_RESULT", str(result_file))
    monkeypatch.delenv("CKALAB_SEED", raising=False)
    nb = nbformat.read(path, as_version=4)
    # Raises CellExecutionError (failing the test) on the first cell that errors.
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    result = json.loads(result_file.read_text()) if result_file.exists() else None
    return nb, result


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", ""))
            for key in ("text/plain", "text/html", "text/markdown"):
                parts.append(str(out.get("data", {}).get(key, "")))
    return "\n".join(parts)


def test_notebook_set_is_complete():
    """One notebook per lab under the name the lab's `order` gives, plus the welcome notebook."""
    names = {p.stem for p in NOTEBOOKS.glob("*.ipynb")}
    assert "00-welcome" in names
    for lab in labs.catalogue():
        expected = f"{lab.order:02d}-{lab.id}"
        assert expected in names, f"lab '{lab.id}' (order {lab.order}) has no notebook {expected}.ipynb"
        assert LAB_NOTEBOOKS.get(expected) == lab.id, f"{expected} is not in LAB_NOTEBOOKS"


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


@pytest.mark.parametrize("name", CONCEPT_NOTEBOOKS)
def test_concept_notebook_runs(name, cluster, tmp_path, monkeypatch):
    path = NOTEBOOKS / f"{name}.ipynb"
    if not path.is_file() and name != "00-welcome":
        pytest.skip(f"optional concept notebook {name} is not written")
    nb, _ = execute(_notebook(name), cluster.name, "learn", tmp_path, monkeypatch)
    if name == "00-welcome":
        text = outputs_text(nb)
        assert f"Cluster '{cluster.name}' (local backend) is running." in text
        assert "node01" in text  # !kubectl get nodes reached the lab cluster
        assert "rbac-role" in text  # !ckalab labs


def test_stopped_cluster_says_how_to_start(cluster, tmp_path, monkeypatch):
    """With no cluster the notebook still runs; the bar says to run `ckalab up` instead of failing."""
    name = "ckalab-never-started"
    nb, result = execute(_notebook("05-rbac-role"), name, "solution", tmp_path, monkeypatch)
    assert result is None  # nothing could be graded
    text = outputs_text(nb)
    assert f"Cluster '{name}' (local backend) is absent. Start it in a terminal with: ckalab up --name {name}" in text
    assert f"Cluster '{name}' is not running" in text and "run 'ckalab up'" in text
