"""Test fixtures: one real local cluster per test session, and a harness to drive labs.

The cluster is the real thing (etcd, kube-apiserver, controller manager, scheduler, kwok)
started by the same code as `ckalab up`. Set CKALAB_TEST_HOME to keep state between runs
(faster when iterating) and CKALAB_TEST_KEEP=1 to leave the cluster running afterwards.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
import yaml

# Each test session gets its own CKALAB_HOME before ckalab computes any path.
# With `pytest -n N` each worker is a session of its own: its own home, so its own cluster.
_WORKER = os.environ.get("PYTEST_XDIST_WORKER", "")
_TEMP_HOME = not os.environ.get("CKALAB_TEST_HOME")  # made here, so removed at the end (unless kept)
_HOME = (os.environ["CKALAB_TEST_HOME"] + (f"-{_WORKER}" if _WORKER else "") if not _TEMP_HOME
         else tempfile.mkdtemp(prefix="ckalab-test-"))
os.environ["CKALAB_HOME"] = _HOME
os.environ.pop("KUBECONFIG", None)  # nothing may fall back to a learner's kubeconfig

from ckalab import grading, labs  # noqa: E402
from ckalab.cluster import get_cluster  # noqa: E402
from ckalab.grading import CheckResult, GradeResult  # noqa: E402
from ckalab.kube import Kube  # noqa: E402
from ckalab.waiting import wait_for  # noqa: E402

TEST_CLUSTER = "ckalab-test"
VENV_BIN = str(Path(sys.executable).parent)


# CKALAB_TEST_NODES=real runs the whole session on real nodes (docs/real-nodes.md).
SESSION_NODES = os.environ.get("CKALAB_TEST_NODES", "kwok")


_STARTED: dict = {}  # the session's cluster, once a test asked for it


@pytest.fixture(scope="session")
def cluster(request):
    c = get_cluster(TEST_CLUSTER, "local")
    # On the nodes the first test that asked for it runs on: in the mixed session a worker's first
    # unit is mostly one on real nodes (the scheduler below hands those out first), and a cluster
    # started on kwok nodes would switch at once (~30 s of a worker and ~10 CPU-s).
    first = _nodes_of(getattr(request, "_pyfuncitem", None))
    os.environ["CKALAB_NODES"] = "real" if first == "real" and REAL_NODES else SESSION_NODES
    try:
        c.up(progress=lambda m: print(m, flush=True))
    finally:
        os.environ.pop("CKALAB_NODES")
    _STARTED["cluster"] = c
    yield c
    if not os.environ.get("CKALAB_TEST_KEEP"):
        c.down(progress=lambda m: None)


def pytest_sessionfinish(session):
    """A temporary home goes with its session (after the cluster fixture's `down`): a cluster
    with real nodes leaves about 1.3 GB there (images, containerd's content, etcd), and runs
    that kept them filled this machine's disk until the kubelets evicted the labs' pods for
    disk pressure. Kept when CKALAB_TEST_KEEP is set, or while anything is still mounted
    under it or a process of its cluster still runs (a cluster that did not stop cleanly: its
    files are evidence, and `ckalab down` needs them)."""
    if not _TEMP_HOME or os.environ.get("CKALAB_TEST_KEEP"):
        return
    if session.testsfailed:
        _keep_logs()
    try:
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        return
    if any(m == _HOME or m.startswith(_HOME + "/") for m in mounts):
        warnings.warn(f"{_HOME} is kept: something is still mounted under it")
        return
    from ckalab.cluster.local import procs

    for entry in os.scandir("/proc"):
        cluster_dir = (procs.environ(int(entry.name)) or {}).get(procs.CLUSTER_ENV, "") if entry.name.isdigit() else ""
        if cluster_dir.startswith(_HOME + "/") and procs.alive(int(entry.name)):
            warnings.warn(f"{_HOME} is kept: pid {entry.name} of its cluster still runs")
            return
    shutil.rmtree(_HOME, ignore_errors=True)


def _keep_logs(limit: int = 1 << 20) -> None:
    """A session with failures keeps its cluster's logs (the components', the nodes' and their
    containers', each cut to its last MiB) in artifacts/test-logs/<worker>/ before its home goes:
    a worker whose cluster broke part-way through a CI run is explained by them."""
    dest = Path(__file__).resolve().parents[1] / "artifacts" / "test-logs" / (_WORKER or "main")
    for path in Path(_HOME).rglob("*.log"):
        try:
            if not path.is_file():
                continue
            target = dest / path.relative_to(_HOME)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "rb") as f:
                f.seek(max(0, path.stat().st_size - limit))
                target.write_bytes(f.read())
        except OSError:
            pass  # a log that went meanwhile: keep the others


# Real nodes (docs/real-nodes.md) need root and build kubelet/containerd/runc the first time:
# their tests run when CKALAB_REAL_NODES=1 (CI sets it), and are skipped otherwise.
REAL_NODES = os.environ.get("CKALAB_REAL_NODES") == "1"
needs_real_nodes = pytest.mark.skipif(
    not REAL_NODES, reason="needs real nodes: set CKALAB_REAL_NODES=1 (root; builds kubelet/containerd/runc)")


def skip_unless_runs_on(lab, cluster, why: str) -> None:
    """Skip a case of a lab the cluster cannot run (a control-plane lab on kwok nodes). A session
    on real nodes has none: there it means this worker's cluster lost its real nodes (a switch
    back from a kwok module that failed), and the case fails rather than hide the lab's cases
    (CI on d2249c7 skipped eight that way without saying why)."""
    if labs.runs_on(lab, cluster):
        return
    if SESSION_NODES == "real" and REAL_NODES:
        pytest.fail(f"{lab.id}: this session runs on real nodes, but the test cluster is on kwok nodes now "
                    "(an earlier switch back to real nodes failed: see the error of that module's teardown)")
    pytest.skip(f"{lab.id} needs {', '.join(lab.needs)}: real nodes (CKALAB_TEST_NODES=real); {why}")


def kernel_config(where: Path):
    """Config for a test's Jupyter kernel: it talks over Unix sockets under `where`, not TCP. A
    kernel is handed five ports that jupyter_client found free a moment before the kernel binds
    them, and on a machine where four workers' clusters and clients keep opening connections one
    can be taken meanwhile: the kernel exits (CI on 707ff42: "Kernel died before replying to
    kernel_info", the failure jupyter_client's port race is known for)."""
    from traitlets.config import Config

    return Config({"KernelManager": {"transport": "ipc", "ip": str(where / "kernel")}})


_SAID: list[str] = []  # what `up` said about ports in use (the warning below quotes it)


def _progress(message: str) -> None:
    print(message, flush=True)
    if "in use by" in message:
        _SAID.append(message)


def switch_nodes(cluster, mode: str) -> None:
    """`ckalab up --nodes MODE` on the test cluster."""
    saved = os.environ.get("CKALAB_NODES")
    os.environ["CKALAB_NODES"] = mode
    try:
        cluster.up(progress=_progress)
    finally:
        if saved is None:
            os.environ.pop("CKALAB_NODES")
        else:
            os.environ["CKALAB_NODES"] = saved


def _switch_for_module(cluster, mode: str):
    """The cluster on `mode` nodes for one module; afterwards, on the nodes the next module runs
    on (a switch costs ~30 s, so consecutive modules on the same nodes share one)."""
    switch_nodes(cluster, mode)
    yield cluster
    switch_for_next(cluster, mode)


def switch_for_next(cluster, now: str) -> None:
    """At a module's end, with the cluster on `now` nodes: the nodes the next module runs on (the
    session's when it uses no cluster: the unit after it is not known yet)."""
    following = _NEXT.get("item")
    if following is None:
        return  # the session ends
    user = _first_on_a_cluster(following)
    after = _nodes_of(user) if user is not None else SESSION_NODES
    if after != now:
        switch_nodes(cluster, after)


def _first_on_a_cluster(item):
    """`item`, or the first test after it in its unit that uses the cluster: a module on real nodes
    may begin with tests that use none (test_encryption_at_rest's first reads lab.yaml), and
    judged by those the worker went to kwok nodes and, one test later, back to real ones."""
    items = item.session.items
    index = _ITEM_INDEX.get(id(items))
    if index is None:
        index = _ITEM_INDEX[id(items)] = {it.nodeid: i for i, it in enumerate(items)}
    unit = _unit(item.nodeid)
    for candidate in items[index.get(item.nodeid, len(items)):]:
        if _unit(candidate.nodeid) != unit:
            break
        if "cluster" in getattr(candidate, "fixturenames", ()):
            return candidate
    return None


_ITEM_INDEX: dict[int, dict[str, int]] = {}


@pytest.fixture(scope="module")
def real_nodes(cluster):
    """The test cluster on real nodes (control plane as static pods) for one test module."""
    if not REAL_NODES:
        pytest.skip("needs real nodes: set CKALAB_REAL_NODES=1 (root; builds kubelet/containerd/runc)")
    yield from _switch_for_module(cluster, "real")


@pytest.fixture(scope="module")
def kwok_nodes(cluster):
    """The test cluster on kwok nodes for one test module: the fallback every learner without root
    (or without Linux) gets, smoke-tested even when the session runs on real nodes."""
    yield from _switch_for_module(cluster, "kwok")


def _control_plane_back() -> None:
    """A unit of work may end with the control plane broken on purpose (a lab's setup takes the API
    server down, a notebook leaves it so): the next one starts from a healthy one, as a learner
    who starts another lab does (labs.contain: teardowns, then ckalab's manifests)."""
    c = _STARTED.get("cluster")
    if c is not None and c.offers("static-pods") and c.status().state != "running":
        labs.contain(None, c)


@pytest.fixture(scope="module", autouse=True)
def _api_server_address_kept():
    """Warns when a module's API server moved (allowed: `up` says so, but worth knowing)."""
    def server() -> str | None:  # the local backend's API server address
        try:
            return _STARTED["cluster"]._server()
        except Exception:  # noqa: BLE001 - not started, another backend, a damaged cluster.json
            return None

    before = server()
    yield
    if before and server() != before:
        warnings.warn(f"the test cluster's API server moved from {before} to {server()} during this module "
                      f"(up said: {' / '.join(_SAID) or 'nothing'})")
    _SAID.clear()


# The item that runs after the current one (pytest tears module fixtures down knowing it).
_NEXT: dict = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    _NEXT["item"] = nextitem
    yield
    # At the end of each unit (a module, or one lab's cases of a SPLIT_BY_LAB module), after its
    # fixtures' teardown: units go to workers in any order, and one lab's engine-equivalence case
    # left apiserver-repair broken for the next lab's (CI on d2249c7, same module: no module end).
    if nextitem is not None and _unit(nextitem.nodeid) != _unit(item.nodeid):
        _control_plane_back()


# Modules whose cases are independent labs (`test_case[<lab id>:...]`, `test_variant_solutions[<lab
# id>]`, a notebook's `[<NN>-<lab id>]`): `--dist loadfile` would give each one whole to a single
# worker, the longest tail of the run (the notebooks alone took 22+ minutes of one worker on real
# nodes); each lab is a unit of its own instead. A test without parameters stays with its file.
SPLIT_BY_LAB = ("tests/test_mutations.py", "tests/test_hostile_corpus.py", "tests/test_variants.py",
                "tests/test_engine_equivalence.py", "tests/notebooks/test_notebooks.py")


def _unit(nodeid: str) -> str:
    """The scheduling unit of a test: its file, or its file and lab for SPLIT_BY_LAB."""
    scope, param = nodeid.split("::", 1)[0], nodeid.partition("[")[2].removesuffix("]")
    return f"{scope}::{param.split(':', 1)[0]}" if scope in SPLIT_BY_LAB and param else scope


# Seconds per scheduling unit in a whole run on real nodes (`CKALAB_TEST_NODES=real`): every run
# writes artifacts/unit-times.json; copy it here to refresh. The work is handed out longest first:
# in collection order (or by test count, xdist's choices) the control-plane labs, mostly waiting
# out API server restarts, came last, three side by side on a CPU half idle after a first part
# with the CPU saturated, and one worker ran 4 minutes alone at the end. In the mixed session the
# units on real nodes go first (longest first), then the others: in collection order a worker
# switched between kwok and real nodes (~30 s and ~10 CPU-s each) whenever consecutive units
# differed, about 20 times in a run; grouped, a worker switches once or twice.
UNIT_TIMES_FILE = Path(__file__).with_name("unit-times.json")


def _known_unit_times() -> dict[str, float]:
    try:
        data = json.loads(UNIT_TIMES_FILE.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float))} if isinstance(data, dict) else {}


# Modules that ask for real nodes by a fixture of their own (test_real_nodes' `real` starts from
# kwok nodes to count what real ones add).
_REAL_BY_OWN_FIXTURE = ("tests/test_real_nodes.py",)
_ASKS_FOR = {"real": re.compile(r"\breal_(?:nodes|lab_harness)\b"), "kwok": re.compile(r"\bkwok_nodes\b")}
_MODULE_TEXT: dict[str, str] = {}


def _unit_asks_for(unit: str, mode: str) -> bool:
    """Whether a unit's module asks for `mode` nodes by fixture, for the scheduler, which has node
    ids only (xdist's controller collects nothing). A SPLIT_BY_LAB module's lab cases run on the
    session's nodes (in the mixed session control-plane labs are skipped there)."""
    if "::" in unit:
        return False
    if mode == "real" and unit in _REAL_BY_OWN_FIXTURE:
        return True
    if unit not in _MODULE_TEXT:
        try:
            _MODULE_TEXT[unit] = (Path(__file__).resolve().parents[1] / unit).read_text()
        except OSError:
            _MODULE_TEXT[unit] = ""
    return bool(_ASKS_FOR[mode].search(_MODULE_TEXT[unit]))


@pytest.hookimpl(optionalhook=True)  # only with pytest-xdist
def pytest_xdist_make_scheduler(config, log):
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    known = _known_unit_times()
    # The nodes a worker would switch to for a unit (~30 s of a worker and ~10-20 CPU-s each way):
    # in the mixed session real-node units go first; on real nodes the kwok smoke units go last,
    # so a worker that takes one switches to kwok nodes once and the session ends there.
    other = "real" if SESSION_NODES != "real" else "kwok"
    grouped = REAL_NODES

    class ByFileAndLab(LoadFileScheduling):
        """loadfile over _unit's units, the longest first (by UNIT_TIMES_FILE; a unit it does not
        know counts a second per test); in the mixed session those on real nodes before the rest,
        on real nodes those on kwok nodes after the rest."""

        def _split_scope(self, nodeid: str) -> str:
            return _unit(nodeid)

        def _assign_work_unit(self, node) -> None:
            def rank(unit):
                switch = grouped and _unit_asks_for(unit, other)
                return (switch if other == "real" else not switch, known.get(unit, len(self.workqueue[unit])))
            first = max(self.workqueue, key=rank)
            self.workqueue.move_to_end(first, last=False)
            super()._assign_work_unit(node)

    return ByFileAndLab(config, log)


# Where the run's time goes, per scheduling unit and worker (the end of `make test` lists them):
# the units are what loadfile balances, so the list shows the run's critical path.
_UNIT_TIME: dict[tuple[str, str], float] = {}


def pytest_runtest_logreport(report):
    node = getattr(report, "node", None)  # the xdist worker that ran it (None without xdist)
    worker = getattr(getattr(node, "gateway", None), "id", "-")
    key = (worker, _unit(report.nodeid))
    _UNIT_TIME[key] = _UNIT_TIME.get(key, 0.0) + report.duration


def pytest_terminal_summary(terminalreporter):
    if not _UNIT_TIME:
        return
    per_worker: dict[str, float] = {}
    per_unit: dict[str, float] = {}
    for (worker, unit), t in _UNIT_TIME.items():
        per_worker[worker] = per_worker.get(worker, 0.0) + t
        per_unit[unit] = per_unit.get(unit, 0.0) + t
    out = Path(__file__).resolve().parents[1] / "artifacts" / "unit-times.json"  # gitignored
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({u: round(t, 1) for u, t in sorted(per_unit.items(), key=lambda kv: -kv[1])},
                              indent=1) + "\n")
    terminalreporter.section("time per worker and test unit")
    terminalreporter.write_line("  ".join(f"{w}: {t / 60:.1f} min" for w, t in sorted(per_worker.items())))
    for (worker, unit), t in sorted(_UNIT_TIME.items(), key=lambda kv: -kv[1])[:25]:
        terminalreporter.write_line(f"{t:8.1f}s  {worker:4}  {unit}")


def pytest_collection_modifyitems(config, items):
    """A *_real.py module runs its kwok module's cases again on real nodes (star-imported, with a
    harness made for real containers) plus its own. When the whole session runs on real nodes,
    the kwok module's own run of the same cases would only repeat them: it is left out."""
    if SESSION_NODES != "real":
        return
    modules = {getattr(item, "module", None) for item in items}
    repeated = {m.__name__.removesuffix("_real") for m in modules if m is not None and m.__name__.endswith("_real")}
    keep, drop = [], []
    for item in items:
        module = getattr(item, "module", None)
        (drop if module is not None and module.__name__ in repeated else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _nodes_of(item) -> str | None:
    """The nodes `item` runs on (None: no item, the session ends, or it uses no cluster)."""
    names = getattr(item, "fixturenames", ())
    if "cluster" not in names:
        return None
    return "real" if "real_nodes" in names else "kwok" if "kwok_nodes" in names else SESSION_NODES


@pytest.fixture
def kube(cluster) -> Kube:
    """A client from the admin kubeconfig as it is now: `up` moves the API server to another port
    when one it recorded is held by another program (it says so), and a client made before that
    would keep calling the old port."""
    return Kube(cluster.kubeconfig)


class LabHarness:
    """Drives one lab the way a learner would: start it, act (kubectl, files, manifests), grade."""

    def __init__(self, cluster, lab_id: str, seed: str | None = None):
        self.cluster = cluster
        self.lab = labs.load(lab_id, seed)
        self.kube = Kube(cluster.kubeconfig)

    @property
    def params(self) -> dict:
        return self.lab.params

    @property
    def workdir(self) -> Path:
        return self.lab.workdir

    def start(self) -> Path:
        return labs.start(self.lab, self.cluster)

    def reset(self) -> list[str]:
        return labs.reset(self.lab, self.cluster)

    def solve(self) -> None:
        labs.solve(self.lab, self.cluster)

    def grade(self) -> GradeResult:
        return grading.run(self.lab, self.cluster)

    def env(self) -> dict:
        return dict(os.environ, KUBECONFIG=str(self.cluster.kubeconfig),
                    PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}")

    def sh(self, script: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a bash script in the lab's work dir with the admin kubeconfig, as in the exam terminal."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=self.workdir, env=self.env(),
                              capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"script failed ({proc.returncode}):\n{script}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run([f"{VENV_BIN}/kubectl", *args], input=input, cwd=self.workdir, env=self.env(),
                              capture_output=True, text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def apply(self, manifest: str) -> None:
        """Apply YAML as the learner would (no lab label), with {{ param }} placeholders filled in."""
        self.kubectl("apply", "-f", "-", input=self.lab.render(manifest))

    def write(self, name: str, content: str | bytes) -> Path:
        p = self.workdir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(content, bytes) else p.write_text)(content)
        return p


def _fresh_labs(cluster):
    def make(lab_id: str, seed: str | None = None) -> LabHarness:
        h = LabHarness(cluster, lab_id, seed)
        if h.workdir.exists():
            shutil.rmtree(h.workdir)
        h.reset()
        return h
    return make


@pytest.fixture
def lab_harness(cluster):
    """Factory: lab_harness("rbac-role") returns a harness on a freshly reset lab whose work
    directory has been emptied (tests start from what `ckalab start` gives a new learner)."""
    return _fresh_labs(cluster)


@pytest.fixture
def real_lab_harness(real_nodes):
    """lab_harness on real nodes (skipped without CKALAB_REAL_NODES=1)."""
    return _fresh_labs(real_nodes)


@pytest.fixture
def cleanup(cluster):
    """Objects a test makes outside a lab's targets (which reset does not remove): append
    `kubectl delete` arguments, e.g. ("rolebinding", "x", "-n", "default"); deleted afterwards."""
    made: list[tuple[str, ...]] = []
    yield made
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    for args in made:
        subprocess.run([f"{VENV_BIN}/kubectl", "delete", "--ignore-not-found", "--grace-period=1", *args], env=env,
                       capture_output=True, timeout=120)


def check_of(result: GradeResult, check_id: str) -> CheckResult:
    for c in result.checks:
        if c.id == check_id:
            return c
    raise AssertionError(f"no check {check_id} in {[c.id for c in result.checks]}")


def failed_ids(result: GradeResult) -> set[str]:
    return {c.id for c in result.checks if c.state == "failed"}


def scored_ids(result: GradeResult) -> set[str]:
    """The checks this cluster could run (not listed as unavailable on its backend)."""
    return {c.id for c in result.checks if c.state != "unavailable"}


def load_yaml(text: str):
    return yaml.safe_load(text)


def wait_api_server_refused(cluster, since: float) -> None:
    """Until a kube-apiserver container that the kubelet created after `since` (time.time()) has
    exited: the edited API server tried and refused to start, the state a grader is to find."""
    from ckalab import controlplane

    def exited() -> bool:
        return any(int(c.get("createdAt", 0)) >= since * 1e9 and c.get("state") == "CONTAINER_EXITED"
                   for c in controlplane.containers(cluster) or [])
    wait_for(exited, 90, "the edited API server's container to start and exit")


def put_api_server_manifest(cluster, text: str) -> None:
    """A learner's answer in the API server's static pod manifest, put there the quick way: the old
    file removed and the new one written once the kubelet let go of the old pod (ckalab's own
    write_manifests). A file replaced in place, as an editor saves it, waits out the kubelet's
    10-15 s back-off first (about 15 s to ready instead of 9); test_real_nodes covers that path.
    For tests that grade the answer, not how it got there."""
    cluster.write_manifests({cluster.etc / "manifests" / "kube-apiserver.yaml": text.encode()})
