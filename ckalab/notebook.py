"""Kernel-side helpers for the notebooks: point the kernel at the lab cluster, copy the notebooks.

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

import hashlib
import html
import json
import os
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from . import home, labs, render
from .cluster import get_cluster
from .cluster.base import up_command
from .errors import CkalabError, ClusterNotRunning
from .grading import GradeResult, printable

SOLUTION = "solution"


def cluster_name() -> str:
    return os.environ.get("CKALAB_CLUSTER") or home.DEFAULT_CLUSTER


def mode() -> str:
    return (os.environ.get("CKALAB_NOTEBOOK_MODE") or "learn").strip().lower()


def solution_mode() -> bool:
    return mode() == SOLUTION


class StopHere(ClusterNotRunning):
    """Raised by the first cell that needs a cluster which is not running.

    IPython shows `_render_traceback_`'s lines instead of a traceback, so the learner reads one
    sentence saying what to do; being an error all the same, it stops "Run All" at that cell, before
    later cells fail in confusing ways (a missing token decoded by base64, an empty kubectl output).
    """

    def _render_traceback_(self) -> list[str]:
        _skip_rest_of_run()
        return [str(self)]


# JupyterLab's "Run All" sends every cell's request at once and the kernel drops only those that
# had already arrived when a cell failed (ipykernel's stop_on_error); on a busy machine a few
# arrive later and run anyway, and the first of them would fail with a traceback. Such a late
# cell was sent within moments of the failed one (both dates come from the browser's clock), while
# a cell the learner runs afterwards was sent later: late cells of the same run become no-ops.
RUN_ALL_BURST = timedelta(seconds=3)
_stopped: dict = {"sent": None}


def _request_sent() -> datetime | None:
    """When the browser sent the cell now running (its execute_request's header date)."""
    try:
        from IPython import get_ipython

        date = get_ipython().kernel.get_parent()["header"]["date"]
        date = date if isinstance(date, datetime) else datetime.fromisoformat(str(date).replace("Z", "+00:00"))
        return date if date.tzinfo else date.replace(tzinfo=timezone.utc)
    except Exception:  # not in a kernel (a script, a test) or no date: nothing to compare
        return None


def _late_cell_of_stopped_run(lines: list[str]) -> list[str]:
    """IPython input transformer: the cell's code, or nothing for a late cell of a stopped run."""
    stopped, sent = _stopped["sent"], _request_sent()
    if stopped and sent and timedelta(0) < sent - stopped < RUN_ALL_BURST:
        return ["pass\n"]
    return lines


def _skip_rest_of_run() -> None:
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        return
    if shell is None:
        return
    _stopped["sent"] = _request_sent()
    if _late_cell_of_stopped_run not in shell.input_transformers_post:
        shell.input_transformers_post.append(_late_cell_of_stopped_run)


def require_running(cluster, allow_degraded: bool = False) -> None:
    """Stop the notebook here, with one friendly line, unless the cluster is running (or, for a
    lab that breaks the control plane on purpose, degraded: its API server may be down)."""
    line, ok = status_line(cluster, ("running", "degraded") if allow_degraded else ("running",))
    if not ok:
        raise StopHere(f"{line}, then run this cell again.")


def use_cluster(name: str | None = None, require: bool = True):
    """Point this kernel (and the shells it starts) at the lab cluster's admin kubeconfig.

    The venv's bin directory goes first on PATH so `!kubectl` and `!ckalab` are the pinned ones,
    whatever PATH the notebook server was started with. With `require` (the default: every
    notebook caller goes on to talk to the cluster) a stopped cluster raises StopHere.
    """
    cluster = get_cluster(name or cluster_name())
    os.environ["KUBECONFIG"] = str(cluster.kubeconfig)
    os.environ["CKALAB_CLUSTER"] = cluster.name
    venv_bin = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "").split(os.pathsep)
    if path[:1] != [venv_bin]:
        os.environ["PATH"] = os.pathsep.join([venv_bin, *[p for p in path if p != venv_bin]])
    if require:
        require_running(cluster)
    return cluster


def use_lab(lab_id: str, seed: str | None = None):
    """Load the lab, point the kernel at its cluster and move into its work directory."""
    lab = labs.load(lab_id, seed if seed is not None else os.environ.get("CKALAB_SEED"))
    cluster = use_cluster(require=False)
    require_running(cluster, allow_degraded=labs.edits_control_plane(lab))
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


def status_line(cluster, usable: tuple[str, ...] = ("running",)) -> tuple[str, bool]:
    """One line about the cluster, and whether it is usable (its state is one of `usable`); says
    how to start it when it is not running."""
    try:
        st = cluster.status()
    except Exception as exc:  # a broken status must not break the notebook
        return f"Cluster '{cluster.name}': status unknown ({exc}). Start it with: {up_command(cluster.name)}", False
    if st.state == "running":
        return f"Cluster '{st.name}' ({st.backend} backend) is running.", True
    return (f"Cluster '{st.name}' ({st.backend} backend) is {st.state}. Start it in a terminal with: "
            f"{up_command(st.name)}"), st.state in usable


def show_status(name: str | None = None) -> bool:
    """Display the cluster status (the welcome and concept notebooks' first cluster cell); True when
    it is running. A stopped cluster is shown too, then StopHere ends "Run All" at this cell."""
    from IPython.display import HTML, display

    cluster = use_cluster(name, require=False)
    line, ok = status_line(cluster)
    display(HTML(render.message_html(line, "ok" if ok else "warn")))
    try:
        st = cluster.status()
        display(HTML(f"<pre>{html.escape(printable(st.render()))}</pre>"))
    except Exception:
        pass
    require_running(cluster)
    return ok


# --- the learner's copy of the notebooks -------------------------------------------------------

SHIPPED = labs.data_root() / "notebooks"  # the checkout's, or the copy an installed wheel carries
LEDGER = ".ckalab-shipped.json"  # name -> sha256 of the version last copied (hidden in JupyterLab)


def notebooks_dir() -> Path:
    return home.home() / "notebooks"


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def copy_notebooks(dest: Path | None = None, source: Path | None = None) -> tuple[Path, list[str]]:
    """Copy the shipped notebooks (not their build sources) to `dest` (default
    $CKALAB_HOME/notebooks), where the learner runs and saves them: the checkout stays clean.

    A copy the learner has not changed is replaced by a newer shipped version; an edited one is
    never overwritten: the newer version goes beside it as NAME.new.ipynb, with a message. The
    ledger file remembers what was copied, which is how an edit is told from an old version.
    Returns the folder and the messages for the learner.
    """
    dest = Path(dest or notebooks_dir()).expanduser().absolute()
    source = Path(source or SHIPPED)
    if dest.exists() and not dest.is_dir():
        raise CkalabError(f"{dest} exists and is not a folder: choose another --dir.")
    dest.mkdir(parents=True, exist_ok=True)
    ledger_path = dest / LEDGER
    try:
        ledger = json.loads(ledger_path.read_text()) if ledger_path.is_file() else {}
        ledger = ledger if isinstance(ledger, dict) else {}
    except (OSError, ValueError):  # a damaged ledger only means every differing copy counts as edited
        ledger = {}
    messages, added = [], []
    for src in sorted(source.glob("*.ipynb")):
        data, new = src.read_bytes(), _digest(src)
        target = dest / src.name
        if not target.exists():
            _write(target, data)
            added.append(src.name)
        else:
            current = _digest(target)
            if current == new:
                pass
            elif current == ledger.get(src.name):
                _write(target, data)
                messages.append(f"updated {src.name} (you had not changed it)")
            elif ledger.get(src.name) != new:
                beside = target.with_name(f"{target.stem}.new.ipynb")
                if not beside.exists() or _digest(beside) != new:
                    _write(beside, data)
                    messages.append(f"kept your edited {src.name}; the newer shipped version is beside it: "
                                    f"{beside.name}")
        ledger[src.name] = new
    if added:
        messages.insert(0, f"copied {len(added)} notebook{'s' if len(added) > 1 else ''} into {dest}: "
                           + ", ".join(added))
    _write(ledger_path, (json.dumps(ledger, indent=1, sort_keys=True) + "\n").encode())
    return dest, messages
