"""Kernel-side helpers for the notebooks: point the kernel at the lab cluster, and render results.

A notebook cell such as `!kubectl get pods` must behave like the exam terminal: it talks to the
lab cluster with its admin kubeconfig and runs in the lab's work directory. `use_lab` arranges
that for the kernel process (os.environ and os.chdir are inherited by every `!` and `%%bash`).

Environment read here:
  CKALAB_CLUSTER          cluster name (default "ckalab")
  CKALAB_SEED             variant seed, as for the CLI
  CKALAB_NOTEBOOK_MODE    "solution" makes the lab bar apply the reference solution where the
                          learner's cells are, so a headless run ends with a passing Check
  CKALAB_NOTEBOOK_RESULT  if set, every Check writes its GradeResult as JSON to this path
                          (tests and automation read it instead of scraping outputs)
"""

from __future__ import annotations

import html
import os
import sys
from pathlib import Path

from . import home, labs
from .cluster import get_cluster
from .grading import FAILED, PASSED, UNAVAILABLE, UNAVAILABLE_TEXT, GradeResult, printable

SOLUTION = "solution"


def cluster_name() -> str:
    return os.environ.get("CKALAB_CLUSTER") or home.DEFAULT_CLUSTER


def mode() -> str:
    return (os.environ.get("CKALAB_NOTEBOOK_MODE") or "learn").strip().lower()


def solution_mode() -> bool:
    return mode() == SOLUTION


def use_cluster(name: str | None = None):
    """Point this kernel (and the shells it starts) at the lab cluster's admin kubeconfig.

    The venv's bin directory goes first on PATH so `!kubectl` and `!ckalab` are the pinned ones,
    whatever PATH the notebook server was started with.
    """
    cluster = get_cluster(name or cluster_name())
    os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
    os.environ["CKALAB_CLUSTER"] = cluster.name
    venv_bin = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if path[:1] != [venv_bin]:
        os.environ["PATH"] = os.pathsep.join([venv_bin, *[p for p in path if p != venv_bin]])
    return cluster


def use_lab(lab_id: str, seed: str | None = None):
    """Load the lab, point the kernel at its cluster and move into its work directory."""
    lab = labs.load(lab_id, seed if seed is not None else os.environ.get("CKALAB_SEED"))
    cluster = use_cluster()
    lab.workdir.mkdir(parents=True, exist_ok=True)
    os.chdir(lab.workdir)
    os.environ["CKALAB_WORKDIR"] = str(lab.workdir)
    os.environ["CKALAB_LAB"] = lab.id
    return lab, cluster


def record(result: GradeResult) -> None:
    """Write the result where CKALAB_NOTEBOOK_RESULT says (for headless runs); else nothing."""
    target = os.environ.get("CKALAB_NOTEBOOK_RESULT")
    if target:
        Path(target).write_text(result.to_json())


# --- HTML rendering (the lab bar and programmatic calls share it) ----------------------------

def _esc(text: str) -> str:
    return html.escape(printable(text))


def result_html(result: GradeResult) -> str:
    """The GradeResult as HTML: a score line, then one row per check, ✔/✘, points, message and hint."""
    colour = "#1a7f37" if result.passed else "#b35900"
    counted = len(result.checks) - len(result.unavailable())
    head = ("All checks passed" if result.passed
            else f"{len(result.failed())} of {counted} checks not passed yet")
    if result.unavailable():
        head += f", {len(result.unavailable())} {UNAVAILABLE_TEXT}"
    marks = {PASSED: ("#1a7f37", "✔"), FAILED: ("#cf222e", "✘"), UNAVAILABLE: ("#57606a", "–")}
    rows = []
    for c in result.checks:
        colour, sign = marks[c.state]
        mark = f'<span style="color:{colour}">{sign}</span>'
        detail = ""
        if c.state == UNAVAILABLE:
            detail = f'<div style="color:#57606a">{UNAVAILABLE_TEXT}: {_esc(c.message)}</div>'
        elif not c.passed:
            detail = f'<div style="white-space:pre-wrap">{_esc(c.message)}</div>'
            if c.hint:
                detail += f'<div style="color:#57606a">hint: <code>{_esc(c.hint)}</code></div>'
        points = "–" if c.state == UNAVAILABLE else f"{c.points}/{c.max_points}"
        # Plain divs, not a table: JupyterLab's rendered-HTML CSS centres and squeezes tables.
        rows.append(f'<div class="ckalab-check-row" data-passed="{str(c.passed).lower()}" data-state="{c.state}" '
                    f'style="display:flex;gap:10px;padding:3px 4px;border-bottom:1px solid #eaeef2">'
                    f'<div style="width:1.4em;font-size:1.15em">{mark}</div>'
                    f'<div style="flex:1;text-align:left"><b>{_esc(c.title)}</b>{detail}</div>'
                    f'<div style="white-space:nowrap">{points}</div></div>')
    return (f'<div class="ckalab-result" data-passed="{str(result.passed).lower()}">'
            f'<div style="font-weight:bold;color:{colour}">Score {result.score}/{result.max_score}: {head}'
            f' <span style="color:#57606a;font-weight:normal">({result.duration_s:.2f}s)</span></div>'
            f'<div>{"".join(rows)}</div></div>')


def message_html(text: str, kind: str = "info") -> str:
    colour = {"info": "#0969da", "error": "#cf222e", "ok": "#1a7f37", "warn": "#b35900"}[kind]
    return (f'<div class="ckalab-msg ckalab-{kind}" style="border-left:4px solid {colour};padding:2px 8px;'
            f'white-space:pre-wrap">{_esc(text)}</div>')


def status_line(cluster) -> tuple[str, bool]:
    """One line about the cluster, and whether it is usable; says how to start it when not."""
    try:
        st = cluster.status()
    except Exception as exc:  # a broken status must not break the notebook
        return f"Cluster '{cluster.name}': status unknown ({exc}). Start it with: ckalab up", False
    if st.state == "running":
        return f"Cluster '{st.name}' ({st.backend} backend) is running.", True
    return (f"Cluster '{st.name}' ({st.backend} backend) is {st.state}. Start it in a terminal with: "
            f"ckalab up{'' if st.name == home.DEFAULT_CLUSTER else ' --name ' + st.name}"), False


def show_status(name: str | None = None) -> bool:
    """Display the cluster status (used by the welcome notebook); True when it is running."""
    from IPython.display import HTML, display

    cluster = use_cluster(name)
    line, ok = status_line(cluster)
    display(HTML(message_html(line, "ok" if ok else "warn")))
    try:
        st = cluster.status()
        display(HTML(f"<pre>{_esc(st.render())}</pre>"))
    except Exception:
        pass
    return ok
