"""Every notebook runs headless (nbclient) against the real test cluster, in both modes.

Solution mode (CKALAB_NOTEBOOK_MODE=solution): the lab bar applies the reference solution where
the learner's cells are, so the notebook's own Check must pass with full score. Normal mode: the
learner cells are empty, so the same Check must report the task unfinished. Either way no cell
may error. The notebook's Check writes its GradeResult to CKALAB_NOTEBOOK_RESULT, which we read.
"""

from __future__ import annotations

import html
import json
import os
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from ckalab import cli, labs
from ckalab import notebook as ckalab_notebook
from conftest import kernel_config, skip_unless_runs_on

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "notebooks"
NOTEBOOKS = REPO / "notebooks"
sys.path.insert(0, str(NOTEBOOKS / "_source"))
import build  # noqa: E402  (the notebook generator)

# notebook -> lab id, in teaching order: derived from the lab data (the notebook's number is the
# lab's `order`), so a new lab needs no entry here. Raw lab.yaml: a lab still missing its grader counts.
LAB_NOTEBOOKS = dict(sorted(
    (f"{d['order']:02d}-{d['id']}", d["id"])
    for d in (yaml.safe_load(p.read_text()) for p in labs.labs_root().glob("*/lab.yaml"))))
CONCEPT_NOTEBOOKS = ["00-welcome", "01-security-primitives", "02-tls-basics"]


def _lab_or_skip(lab_id: str, cluster=None):
    if not (labs.labs_root() / lab_id / "lab.yaml").is_file():
        pytest.skip(f"lab '{lab_id}' does not exist yet (no labs/{lab_id}/lab.yaml)")
    lab = labs.load(lab_id)
    if cluster is not None:
        skip_unless_runs_on(lab, cluster, "its own tests run there")
    return lab


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
    NotebookClient(nb, timeout=300, kernel_name="python3", config=kernel_config(tmp_path),
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)  # the executed notebook, for a look after a failure
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
    # Every numbered notebook past the concept ones belongs to a lab.
    numbered = {n for n in names if n[:2].isdigit()}
    assert numbered - set(CONCEPT_NOTEBOOKS) == set(LAB_NOTEBOOKS), "a numbered notebook without a lab"


def test_notebooks_are_built_from_source():
    assert build.main(["--check"]) == 0


@pytest.mark.parametrize("name", list(LAB_NOTEBOOKS))
def test_solution_mode_passes(name, cluster, lab_harness, tmp_path, monkeypatch):
    lab = _lab_or_skip(LAB_NOTEBOOKS[name], cluster)
    lab_harness(lab.id)  # a fresh lab: reset, empty work dir
    nb, result = execute(_notebook(name), cluster.name, "solution", tmp_path, monkeypatch)
    assert result is not None, "the notebook's Check did not run"
    assert result["lab"] == lab.id
    # A check this backend cannot run is "unavailable" (0 of 0 points), not a failure.
    failed = [f"{c['title']}: {c['message']}" for c in result["checks"] if c["state"] == "failed"]
    assert result["passed"] and not failed, failed
    assert result["score"] == result["max_score"] > 0
    text = outputs_text(nb)
    assert f"Score {result['max_score']}/{result['max_score']}: All checks passed" in text
    assert lab.task.strip().splitlines()[0] in text, "the task text was not shown"
    assert_examples_ran(nb)


@pytest.mark.parametrize("name", list(LAB_NOTEBOOKS))
def test_normal_mode_reports_unfinished(name, cluster, lab_harness, tmp_path, monkeypatch):
    lab = _lab_or_skip(LAB_NOTEBOOKS[name], cluster)
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


ALL_NOTEBOOKS = sorted(p.stem for p in NOTEBOOKS.glob("*.ipynb"))
STOPPED = "ckalab-never-started"  # a cluster name nothing starts: "stopped" without stopping ours


@pytest.mark.parametrize("name", ALL_NOTEBOOKS)
def test_run_all_on_a_stopped_cluster_stops_with_one_line(name, tmp_path, monkeypatch):
    """"Run All" with the cluster stopped: the first cell that needs the cluster fails with one
    friendly line (no traceback, no binascii from a token that never came) and no later cell runs."""
    monkeypatch.setenv("CKALAB_CLUSTER", STOPPED)
    monkeypatch.setenv("CKALAB_NOTEBOOK_MODE", "solution")
    monkeypatch.setenv("CKALAB_NOTEBOOK_RESULT", str(tmp_path / "result.json"))
    monkeypatch.delenv("CKALAB_SEED", raising=False)
    nb = nbformat.read(_notebook(name), as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", config=kernel_config(tmp_path),
                            resources={"metadata": {"path": str(tmp_path)}})
    if not any("ckalab" in c.source for c in nb.cells if c.cell_type == "code"):
        client.execute()  # a notebook that never needs the cluster runs through
        return
    with pytest.raises(CellExecutionError):
        client.execute()
    code = [c for c in nb.cells if c.cell_type == "code"]
    stopped = next(i for i, c in enumerate(code) if any(o.output_type == "error" for o in c.outputs))
    error = next(o for o in code[stopped].outputs if o.output_type == "error")
    assert error.ename == "StopHere"
    assert error.traceback == [f"Cluster '{STOPPED}' (local backend) is absent. Start it in a terminal with: "
                               f"ckalab up --name {STOPPED}, then run this cell again."]
    assert "ckalab" in code[stopped].source  # the first cell that talks to the cluster ...
    assert all(c.execution_count is None and not c.outputs for c in code[stopped + 1:])  # ... ends the run
    text = outputs_text(nb)
    for noise in ("Traceback", "binascii", "connection refused", "Error from server"):
        assert noise not in text, f"{noise!r} before the run stopped:\n{text[-2000:]}"
    assert not (tmp_path / "result.json").exists()  # nothing was graded


def test_late_cells_of_a_stopped_run_all_do_nothing(monkeypatch, tmp_path):
    """JupyterLab's Run All sends every cell at once; the kernel drops only requests that arrived
    before the error. A request of the same burst that arrives later must not run (it would fail
    with a traceback); a cell the learner runs afterwards runs as usual."""
    import datetime as dt

    from jupyter_client.manager import KernelManager

    monkeypatch.setenv("CKALAB_CLUSTER", STOPPED)
    km = KernelManager(kernel_name="python3", config=kernel_config(tmp_path))
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=60)
        def run(code: str, sent: dt.datetime | None = None) -> tuple[dict, list[dict], dt.datetime]:
            msg = kc.session.msg("execute_request", {"code": code, "silent": False, "store_history": True,
                                                     "user_expressions": {}, "allow_stdin": False,
                                                     "stop_on_error": True})
            if sent is not None:  # the browser's send time of a request that arrives late
                msg["header"]["date"] = sent.isoformat()
            kc.shell_channel.send(msg)
            reply = kc.get_shell_msg(timeout=60)
            # On a busy machine wait_for_ready() may have sent kernel_info twice: skip stray replies.
            while reply["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
                reply = kc.get_shell_msg(timeout=60)
            outputs = []
            while True:
                out = kc.get_iopub_msg(timeout=60)
                if out["parent_header"].get("msg_id") != msg["header"]["msg_id"]:
                    continue
                if out["msg_type"] == "status" and out["content"]["execution_state"] == "idle":
                    return reply["content"], outputs, msg["header"]["date"]
                if out["msg_type"] in ("stream", "error", "execute_result", "display_data"):
                    outputs.append(out["content"])

        first, outputs, first_sent = run("from ckalab.widgets import LabBar\nbar = LabBar('service-accounts')")
        assert first["status"] == "error" and first["ename"] == "StopHere"
        assert [o.get("traceback") for o in outputs] == [[
            f"Cluster '{STOPPED}' (local backend) is absent. Start it in a terminal with: "
            f"ckalab up --name {STOPPED}, then run this cell again."]]
        # Sent 50 ms after the failed cell, as Run All does, but arrived after its error.
        late, outputs, _ = run("import base64; base64.b64decode('x')",  # binascii.Error if it ran
                               sent=first_sent + dt.timedelta(milliseconds=50))
        assert late["status"] == "ok" and outputs == []
        later, outputs, _ = run("print('runs')", sent=first_sent + dt.timedelta(seconds=10))
        assert later["status"] == "ok" and outputs == [{"name": "stdout", "text": "runs\n"}]
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_a_lab_that_breaks_the_control_plane_opens_on_a_degraded_cluster_not_a_stopped_one(cluster):
    """apiserver-repair's notebook must open while its API server is down on purpose (the cluster
    is "degraded"), but a stopped cluster still ends the run with the one line."""
    from ckalab.cluster import get_cluster

    ckalab_notebook.require_running(cluster, allow_degraded=True)  # running: fine either way
    for allow in (False, True):
        with pytest.raises(ckalab_notebook.StopHere) as stop:
            ckalab_notebook.require_running(get_cluster(STOPPED), allow_degraded=allow)
        assert str(stop.value) == (f"Cluster '{STOPPED}' (local backend) is absent. Start it in a terminal with: "
                                   f"ckalab up --name {STOPPED}, then run this cell again.")


def test_lab_bar_called_from_code_on_a_stopped_cluster_stops_the_run(cluster, lab_harness, monkeypatch):
    """A cluster that stops after the bar was drawn: a code cell's bar.check() ends "Run All" with
    the one line (StopHere), a click shows the message in the bar; the status line follows either way."""
    from ckalab.cluster import get_cluster
    from ckalab.widgets import LabBar

    lab_harness("rbac-role")
    monkeypatch.setenv("CKALAB_CLUSTER", cluster.name)
    monkeypatch.setenv("KUBECONFIG", "")  # LabBar points the process at the cluster; undone afterwards
    monkeypatch.setenv("PATH", os.environ["PATH"])
    monkeypatch.chdir(REPO)
    bar = LabBar("rbac-role")
    assert "is running" in bar.status.value
    bar.cluster = get_cluster(STOPPED)  # what the kernel sees once the cluster is gone
    with pytest.raises(ckalab_notebook.StopHere) as stop:
        bar.check()
    assert str(stop.value) == f"Cluster '{STOPPED}' is not running (absent): run 'ckalab up --name {STOPPED}'."
    assert f"{STOPPED}' (local backend) is absent" in html.unescape(bar.status.value)
    assert "ckalab-warn" in bar.status.value
    bar.buttons["check"].click()  # a click: the message goes into the bar, nothing is raised
    assert bar.last_result is None
    bar.cluster = cluster
    bar.buttons["check"].click()
    assert "is running" in bar.status.value and "ckalab-ok" in bar.status.value
    assert bar.last_result is not None and not bar.last_result.passed


# --- the learner's copy: `ckalab notebooks` ---------------------------------------------------

def _shipped(tmp_path, **notebooks) -> Path:
    src = tmp_path / "shipped"
    src.mkdir(exist_ok=True)
    for stem, text in notebooks.items():
        nb = nbformat.v4.new_notebook()
        nb.cells.append(nbformat.v4.new_markdown_cell(text, id="c00"))  # fixed id: same text, same bytes
        nbformat.write(nb, src / f"{stem}.ipynb")
    return src


def test_make_lab_serves_the_copy_and_lands_on_the_welcome_notebook():
    """The flags the browser test starts JupyterLab with are the ones `make lab` uses."""
    recipe = (REPO / "Makefile").read_text().split("\nlab:", 1)[1].split("\n\n", 1)[0]
    assert 'dir="$$(ckalab notebooks)"' in recipe
    assert '--ServerApp.root_dir="$$dir"' in recipe
    assert "--LabApp.default_url=/lab/tree/00-welcome.ipynb" in recipe
    assert "notebooks/" not in recipe  # nothing opened from the checkout


def test_copy_holds_every_notebook_and_no_build_sources(tmp_path, capsys):
    dest = tmp_path / "mine"
    assert cli.main(["notebooks", "--dir", str(dest)]) == 0
    out, err = capsys.readouterr()
    assert out == f"{dest}\n"  # only the folder on stdout: `make lab` passes it to jupyter lab
    assert err.startswith(f"copied {len(ALL_NOTEBOOKS)} notebooks into {dest}: 00-welcome.ipynb, ")
    assert sorted(p.name for p in dest.iterdir() if not p.name.startswith(".")) == [
        f"{n}.ipynb" for n in ALL_NOTEBOOKS]
    for n in ALL_NOTEBOOKS:
        assert (dest / f"{n}.ipynb").read_bytes() == (NOTEBOOKS / f"{n}.ipynb").read_bytes()
    assert cli.main(["notebooks", "--dir", str(dest)]) == 0  # again: nothing to say
    assert capsys.readouterr() == (f"{dest}\n", "")


def test_copy_never_overwrites_an_edited_notebook(tmp_path):
    dest = tmp_path / "mine"
    ckalab_notebook.copy_notebooks(dest, _shipped(tmp_path, a="v1", b="v1", c="v1"))
    nbformat.write(nbformat.v4.new_notebook(), dest / "a.ipynb")  # the learner saved a (outputs, edits)
    nbformat.write(nbformat.v4.new_notebook(), dest / "c.ipynb")  # and c
    edited = (dest / "a.ipynb").read_bytes()
    # A new release changes a and b; c stays as it was.
    _, messages = ckalab_notebook.copy_notebooks(dest, _shipped(tmp_path, a="v2", b="v2", c="v1", d="v1"))
    assert messages == ["copied 1 notebook into " + str(dest) + ": d.ipynb",
                        "kept your edited a.ipynb; the newer shipped version is beside it: a.new.ipynb",
                        "updated b.ipynb (you had not changed it)"]
    assert (dest / "a.ipynb").read_bytes() == edited
    assert "v2" in (dest / "a.new.ipynb").read_text() and "v2" in (dest / "b.ipynb").read_text()
    assert "v1" not in (dest / "c.ipynb").read_text()  # edited, no newer version: left alone, silently
    # Run again: nothing new to say, and the learner's file is still theirs.
    assert ckalab_notebook.copy_notebooks(dest, _shipped(tmp_path, a="v2", b="v2", c="v1", d="v1"))[1] == []
    assert (dest / "a.ipynb").read_bytes() == edited


def test_copy_without_a_ledger_treats_differing_files_as_the_learners(tmp_path):
    """A folder from before the ledger (or a lost ledger): a differing file may hold work, so it stays."""
    dest = tmp_path / "mine"
    dest.mkdir()
    (dest / "a.ipynb").write_text("my own work")
    (dest / ".ckalab-shipped.json").write_text("[not json")
    _, messages = ckalab_notebook.copy_notebooks(dest, _shipped(tmp_path, a="v1"))
    assert messages == ["kept your edited a.ipynb; the newer shipped version is beside it: a.new.ipynb"]
    assert (dest / "a.ipynb").read_text() == "my own work"


def test_copy_into_a_file_is_a_clear_error(tmp_path, capsys):
    target = tmp_path / "file"
    target.write_text("x")
    assert cli.main(["notebooks", "--dir", str(target)]) == 2
    assert f"{target} exists and is not a folder: choose another --dir." in capsys.readouterr().err


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
