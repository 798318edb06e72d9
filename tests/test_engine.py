"""The lab engine and grading engine, on a small lab of the test's own (not the catalogue's)."""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ckalab import grading, labs
from ckalab.cluster import get_cluster
from ckalab.errors import CkalabError, ClusterNotRunning

LAB_YAML = """\
apiVersion: ckalab/v1
id: sample
title: Sample
order: 1
topic: Testing
task: task.md
params:
  cm: {default: answer, choices: [answer, reply, response]}
hints: ["look at {{ cm }}", "kubectl get cm {{ cm }}"]
setup:
  manifests: [setup/setup.yaml]
  script: setup/setup.sh
solution:
  script: solution/solve.sh
targets:
  - {apiVersion: v1, kind: ConfigMap, name: "{{ cm }}", namespace: engine-test}
"""
GRADER = '''
import pytest

from ckalab.grading import check, expect, fail

@check(2, "ConfigMap exists", hint="kubectl get cm -n engine-test")
def test_exists(kube, lab):
    expect(kube.get("v1", "ConfigMap", lab.params["cm"], "engine-test"),
           f"ConfigMap '{lab.params['cm']}' not found in namespace 'engine-test'.")

@check(3, "value is 42", after="test_exists")
def test_value(kube, lab):
    cm = kube.get("v1", "ConfigMap", lab.params["cm"], "engine-test")
    expect(cm["data"].get("value") == "42", f"value is {cm['data'].get('value')!r}, expected '42'.")

@check(1, "a buggy check")
def test_buggy(kube, lab, workdir):
    if (workdir / "explode").exists():
        {}["missing"]
    if (workdir / "hang").exists():
        import time
        time.sleep(30)
    if (workdir / "deep").exists():
        def down(n):
            return down(n + 1)
        down(0)


@pytest.fixture
def feature(workdir):
    """Stands in for a backend feature (exec, real traffic): present when the file is."""
    if not (workdir / "feature").exists():
        pytest.skip("this backend has no feature")


@check(4, "needs the feature (skips at setup)")
def test_feature(feature):
    pass


@check(1, "builds on the feature", after="test_feature")
def test_after_feature(lab):
    pass


@check(2, "skips inside the check")
def test_skips_inside(workdir):
    if not (workdir / "feature").exists():
        pytest.skip("no exec on this backend")
'''


@pytest.fixture
def sample(tmp_path, monkeypatch, cluster):
    lab_dir = tmp_path / "labs" / "sample"
    lab_dir.mkdir(parents=True)
    (lab_dir / "lab.yaml").write_text(LAB_YAML)
    (lab_dir / "task.md").write_text("Create ConfigMap {{ cm }} with value=42.\n")
    (lab_dir / "setup").mkdir()
    (lab_dir / "solution").mkdir()
    (lab_dir / "setup" / "setup.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: engine-test}\n---\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: given, namespace: engine-test}\ndata: {a: b}\n")
    (lab_dir / "setup" / "setup.sh").write_text("[ -f notes.txt ] || echo 'setup ran' > notes.txt\n")
    (lab_dir / "solution" / "solve.sh").write_text("kubectl -n engine-test create configmap {{ cm }} --from-literal=value=42\n")
    graders = tmp_path / "graders"
    graders.mkdir()
    (graders / "sample.py").write_text(GRADER)
    monkeypatch.setenv("CKALAB_LABS_DIR", str(tmp_path / "labs"))
    monkeypatch.setenv("CKALAB_GRADERS_DIR", str(graders))
    lab = labs.load("sample")
    yield lab
    labs.reset(lab, cluster)


def test_catalogue_is_valid():
    assert labs.validate_all() == []
    assert "rbac-role" in labs.lab_ids()


def test_validation_reports_every_problem_at_once(tmp_path):
    d = tmp_path / "broken"
    d.mkdir()
    (d / "setup.yaml").write_text("a: [unclosed\n")
    problems = labs.validate(d, {
        "apiVersion": "ckalab/v0", "id": "Broken_Lab", "title": 3, "order": "first", "topic": "x",
        "task": "missing.md", "hints": ["use {{ nope }}"], "solution": {"script": "gone.sh", "extra": 1},
        "setup": {"manifests": ["setup.yaml"]}, "colour": "blue",
    })
    text = "\n".join(problems)
    for expected in [
        "field 'title' should be str", "field 'order' should be int", "unknown field 'colour'",
        "apiVersion is 'ckalab/v0'", "id 'Broken_Lab' differs from its folder name 'broken'",
        "must be lowercase words", "file 'missing.md' does not exist", "file 'gone.sh' does not exist",
        "solution.extra is unknown", "not valid YAML", "'{{ nope }}' is used but not declared in params",
    ]:
        assert expected in text, f"{expected!r} not reported in:\n{text}"
    assert labs.validate(d, ["not", "a", "mapping"]) == [f"{d / 'lab.yaml'}: expected a mapping of fields, got list"]


def test_unknown_lab_names_the_catalogue():
    with pytest.raises(CkalabError, match=r"No lab 'nope' \(looked in .*\)\. Labs: .*rbac-role"):
        labs.load("nope")


def test_params_render_and_seeds_are_reproducible(sample):
    assert sample.task == "Create ConfigMap answer with value=42.\n"
    seeded = [labs.load("sample", seed=s).params["cm"] for s in ("s1", "s2", "s3", "s4", "s5", "s6")]
    assert seeded == [labs.load("sample", seed=s).params["cm"] for s in ("s1", "s2", "s3", "s4", "s5", "s6")]
    assert set(seeded) <= {"answer", "reply", "response"} and len(set(seeded)) > 1


def test_start_twice_equals_once_and_labels_everything(sample, cluster, kube):
    labs.start(sample, cluster)
    first = kube.get("v1", "ConfigMap", "given", "engine-test")
    labs.start(sample, cluster)
    again = kube.get("v1", "ConfigMap", "given", "engine-test")
    assert first["metadata"]["resourceVersion"] == again["metadata"]["resourceVersion"]
    assert again["metadata"]["labels"]["ckalab.io/lab"] == "sample"
    assert (sample.workdir / "notes.txt").read_text() == "setup ran\n"


def test_grading_from_unfinished_to_solved(sample, cluster):
    labs.reset(sample, cluster)
    r = grading.run(sample, cluster)
    assert (r.passed, r.score, r.max_score) == (False, 1, 6)
    assert [(c.id, c.state, c.passed, c.message) for c in r.checks] == [
        ("test_exists", "failed", False, "ConfigMap 'answer' not found in namespace 'engine-test'."),
        ("test_value", "failed", False, 'Not checked yet: first fix "ConfigMap exists".'),
        ("test_buggy", "passed", True, ""),
        *UNAVAILABLE,
    ]
    assert r.checks[0].hint == "kubectl get cm -n engine-test"
    labs.solve(sample, cluster)
    r = grading.run(sample, cluster)
    assert r.passed and r.score == 6
    assert "✔ [3/3] value is 42" in r.render()


# What the sample grader's feature checks report where the feature is missing.
UNAVAILABLE = [
    ("test_feature", "unavailable", False, "this backend has no feature"),
    ("test_after_feature", "unavailable", False,
     'it builds on "needs the feature (skips at setup)", which is not available on this backend either'),
    ("test_skips_inside", "unavailable", False, "no exec on this backend"),
]


def test_checks_the_backend_cannot_run_are_listed_as_unavailable(sample, cluster, kube):
    """A check that skips itself (from a fixture, inside the check, or after one that did) is a
    result with state 'unavailable', 0 of 0 points: listed, not scored, and not a failure.
    Both engines agree; where the feature exists the same checks run and count."""
    labs.start(sample, cluster)
    labs.solve(sample, cluster)
    for r in (grading.run(sample, cluster), grading.run_direct(sample, cluster, kube)):
        assert (r.passed, r.score, r.max_score) == (True, 6, 6)
        assert [(c.id, c.state, c.passed, c.message) for c in r.checks][3:] == UNAVAILABLE
        assert [(c.points, c.max_points, c.hint) for c in r.unavailable()] == [(0, 0, "")] * 3
        assert r.failed() == []
        assert r.render().splitlines()[0].startswith(
            "sample: 6/6 points, all checks passed, 3 not available on this backend (")
        assert r.render().splitlines()[-2:] == [
            "  – [-] skips inside the check: not available on this backend", "      no exec on this backend"]
        assert json.loads(r.to_json())["checks"][3]["state"] == "unavailable"
    (sample.workdir / "feature").write_text("")
    try:
        for r in (grading.run(sample, cluster), grading.run_direct(sample, cluster, kube)):
            assert (r.passed, r.score, r.max_score) == (True, 13, 13)
            assert {c.state for c in r.checks} == {"passed"}
    finally:
        (sample.workdir / "feature").unlink()


def test_printable_strips_controls_and_disarms_escapes():
    assert grading.printable("a\x1b[2Jb\x07c\r\nd\te\x85\x9bf\ud800") == "a\\x1b[2Jbc\nd\tef\ufffd"
    assert grading.printable("id\nwith\ttabs", oneline=True) == "id with tabs"
    r = grading.GradeResult("x", False, 0, 1, 0.0, [grading.CheckResult(
        "t", "title \x1b]0;pwned\x07", False, 0, 1, "value '\x1b[31mred\x00'")])
    assert "\x1b" not in r.render() and "\x00" not in r.render()
    assert "✘ [0/1] title \\x1b]0;pwned" in r.render() and "value '\\x1b[31mred'" in r.render()


def test_a_grader_bug_is_a_failed_check_not_a_traceback(sample, cluster):
    labs.start(sample, cluster)
    (sample.workdir / "explode").write_text("")
    try:
        r = grading.run(sample, cluster)
    finally:
        (sample.workdir / "explode").unlink()
    bug = r.checks[2]
    assert not bug.passed
    assert bug.message == ("This check could not run (KeyError: 'missing'). "
                           "This is a bug in the grader; please report it.")


@pytest.mark.parametrize("engine", ["run", "run_direct", "worker-thread"])
def test_a_check_that_hangs_is_stopped_and_says_so(sample, cluster, kube, monkeypatch, engine):
    """On the main thread SIGALRM stops the check; on a classroom worker thread the grading stops
    waiting for it. Either way the result comes back in time and the checks after it run."""
    labs.start(sample, cluster)
    monkeypatch.setattr(grading, "CHECK_SECONDS", 0.5)
    (sample.workdir / "hang").write_text("")
    try:
        t0 = time.monotonic()
        if engine == "run":
            r = grading.run(sample, cluster)
        elif engine == "run_direct":
            r = grading.run_direct(sample, cluster, kube)
        else:
            with ThreadPoolExecutor(1) as pool:
                r = pool.submit(grading.run_direct, sample, cluster, kube).result()
    finally:
        (sample.workdir / "hang").unlink()
    assert time.monotonic() - t0 < 15
    assert r.checks[2].message.startswith("This check took longer than 0.5 s and was stopped: something it reads "
                                          "never ends")
    assert len(r.checks) > 3  # the checks after the hanging one were graded too


def test_runaway_recursion_is_not_called_a_grader_bug(sample, cluster):
    labs.start(sample, cluster)
    (sample.workdir / "deep").write_text("")
    try:
        r = grading.run(sample, cluster)
    finally:
        (sample.workdir / "deep").unlink()
    assert r.checks[2].message.startswith("This check stopped: what it reads is nested too deeply")


def test_a_grader_that_does_not_import_is_an_error(sample, cluster):
    sample.grader.write_text("def broken(:\n")
    with pytest.raises(CkalabError, match="could not run"):
        grading.run(sample, cluster)


def test_reset_removes_targets_and_labelled_objects_only(sample, cluster, kube):
    labs.start(sample, cluster)
    labs.solve(sample, cluster)
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "foreign", "namespace": "engine-test"}})
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "stale", "namespace": "engine-test",
                                                                       "labels": {"ckalab.io/lab": "sample"}}})
    removed = labs.reset(sample, cluster)
    assert sorted(removed) == ["ConfigMap/answer", "ConfigMap/given", "ConfigMap/stale"]
    assert kube.get("v1", "ConfigMap", "foreign", "engine-test") is not None  # never ours to delete
    assert kube.get("v1", "ConfigMap", "given", "engine-test") is not None    # setup applied again
    assert kube.get("v1", "ConfigMap", "answer", "engine-test") is None
    assert kube.get("v1", "Namespace", "engine-test") is not None
    kube.delete("v1", "ConfigMap", "foreign", "engine-test")


def test_hints_progress_and_stop_at_the_last(sample):
    labs.hint_state("sample", reset=True)
    assert [labs.next_hint(sample) for _ in range(3)] == [
        (1, "look at answer"), (2, "kubectl get cm answer"), (2, "kubectl get cm answer")]


def test_grading_a_stopped_cluster_says_how_to_start_it(sample):
    stopped = get_cluster("not-started", "local")
    with pytest.raises(ClusterNotRunning, match=r"Cluster 'not-started' is not running \(absent\): run 'ckalab up --name not-started'\."):
        grading.run(sample, stopped)


def _cli(*args, env_extra=None):
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([str(Path(sys.executable).parent / "ckalab"), *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_cli_check_exit_codes_and_json(cluster):
    from conftest import TEST_CLUSTER

    lab = labs.load("rbac-role")
    labs.reset(lab, cluster)
    out = _cli("check", "rbac-role", "--json", "--name", TEST_CLUSTER)
    assert out.returncode == 1, out.stderr
    data = json.loads(out.stdout)
    assert set(data) >= {"lab", "passed", "score", "max_score", "duration_s", "checks"}
    assert set(data["checks"][0]) >= {"id", "title", "passed", "points", "message", "hint"}
    assert _cli("solve", "rbac-role", "--name", TEST_CLUSTER).returncode == 0
    assert _cli("check", "rbac-role", "--name", TEST_CLUSTER).returncode == 0
    bad = _cli("check", "no-such-lab", "--name", TEST_CLUSTER)
    assert bad.returncode == 2 and bad.stderr.startswith("error: No lab 'no-such-lab'")
    down = _cli("check", "rbac-role", "--name", "not-started")
    assert down.returncode == 2
    assert down.stderr == "error: Cluster 'not-started' is not running (absent): run 'ckalab up --name not-started'.\n"
    labs.reset(lab, cluster)


def test_cli_status_and_env(cluster):
    from conftest import TEST_CLUSTER

    st = _cli("status", "--json", "--name", TEST_CLUSTER)
    assert st.returncode == 0 and json.loads(st.stdout)["state"] == "running"
    env = _cli("env", "--name", TEST_CLUSTER)
    assert env.stdout.splitlines()[0] == f"export KUBECONFIG={cluster.kubeconfig}"
    assert _cli("kubeconfig", "--name", TEST_CLUSTER).stdout.strip() == str(cluster.kubeconfig)
    gone = _cli("down", "--name", "not-started")
    assert gone.returncode == 0 and "nothing to stop" in gone.stdout


def test_backend_note_names_what_the_local_backend_lacks(cluster):
    note = ("Note: the local backend lacks a CNI that enforces NetworkPolicy, for real traffic probes; the checks "
            "that need it are left out and everything else is graded. For all of them: 'ckalab up --nodes real' (as "
            "root on Linux) or 'ckalab up --backend kind' on a Docker machine.")
    assert labs.backend_note(labs.load("network-policies"), "local") == note
    # A cluster answers for what it offers now (this session's: kwok nodes, unless CKALAB_TEST_NODES=real).
    assert labs.backend_note(labs.load("network-policies"), cluster) == ("" if cluster.offers("netpol-enforcement")
                                                                         else note)
    assert labs.backend_note(labs.load("network-policies"), "kind") == ""
    assert labs.backend_note(labs.load("rbac-role"), "local") == ""


def test_unreachable_api_server_names_this_cluster():
    """A bare 'ckalab up' would start the default cluster, not the one the learner grades on."""
    said = grading._message(ConnectionError("refused"), get_cluster("not-started"))
    assert said == ("Cannot reach the cluster's API server: check it with 'ckalab status --name not-started' "
                    "and start it with 'ckalab up --name not-started'.")
    from ckalab.classroom import ExternalCluster  # a shared cluster: not ours to start

    assert grading._message(ConnectionError("refused"), ExternalCluster("/nonexistent")) == (
        "Cannot reach the cluster's API server: check it with 'kubectl cluster-info'.")


def test_unknown_needs_are_reported(tmp_path):
    d = tmp_path / "x"
    d.mkdir()
    problems = labs.validate(d, {"needs": ["gpu"]})
    assert (f"{d / 'lab.yaml'}: needs 'gpu' is unknown (known: exec, netpol-enforcement, static-pods, node-shell, "
            "private-registry)") in problems


def test_reset_clean_moves_the_learners_files_aside(sample, cluster):
    import shutil

    for old in sample.workdir.parent.glob("sample.before-reset*"):  # a kept test home's earlier runs
        shutil.rmtree(old)
    labs.start(sample, cluster)
    (sample.workdir / "mine.txt").write_text("learner's work")
    labs.reset(sample, cluster, clean=True)
    labs.reset(sample, cluster, clean=True)  # again: nothing of the learner's left to move, nothing lost
    aside = sample.workdir.with_name("sample.before-reset")
    assert (aside / "mine.txt").read_text() == "learner's work"
    assert not (sample.workdir / "mine.txt").exists()
    assert (sample.workdir / "notes.txt").read_text() == "setup ran\n"  # setup ran in a fresh dir
    assert sample.workdir.with_name("sample.before-reset-2").is_dir()  # setup's own file, moved not deleted


SCOPED_GRADER = '''
import pytest

from ckalab.grading import check, expect

CALLS = []


@pytest.fixture(scope="module")
def once(lab):
    CALLS.append("once")
    yield len(CALLS)
    CALLS.append("once-down")


@pytest.fixture
def each(once):
    CALLS.append("each")
    yield once
    CALLS.append("each-down")


@pytest.fixture(scope="session")
def missing():
    CALLS.append("missing")
    pytest.skip("not on this backend")


@check(1, "first")
def test_first(once, each):
    expect(each == once, f"each saw {each}, not {once}")


@check(1, "second")
def test_second(each):
    pass


@check(1, "skips through a run-scoped fixture")
def test_third(missing):
    pass


@check(1, "skips through it again")
def test_fourth(missing):
    pass


def _make(n):
    @check(1, f"generated {n}")
    def test(lab):
        expect(n != 2, f"generated check {n} fails")
    test.__name__ = f"test_generated_{n}"
    return test


for _n in (1, 2):
    globals()[f"test_generated_{_n}"] = _make(_n)
'''


def test_fixture_scopes_teardown_and_generated_checks(sample, cluster, kube):
    """Function scope per check, module/session scope once per grading run (its skip too), a
    generator fixture's teardown after its scope, checks built in a loop in file order."""
    sample.grader.write_text(SCOPED_GRADER)
    for run in (1, 2):
        r = grading.run_direct(sample, cluster, kube)
        assert [(c.id, c.state) for c in r.checks] == [
            ("test_first", "passed"), ("test_second", "passed"), ("test_third", "unavailable"),
            ("test_fourth", "unavailable"), ("test_generated_1", "passed"), ("test_generated_2", "failed")]
        assert r.checks[3].message == "not on this backend" and r.checks[5].message == "generated check 2 fails"
    calls = grading.load_grader(sample.grader).CALLS  # the same module both runs: the file did not change
    one_run = ["once", "each", "each-down", "each", "each-down", "missing", "once-down"]
    assert calls == one_run * 2


@pytest.mark.parametrize("source, problem", [
    ("@pytest.fixture(scope='class')\ndef f(lab):\n    return 1\n\n@check(1, 't')\ndef test_t(f):\n    pass\n",
     "fixture 'f' has scope 'class' (supported: function, module, package, session)"),
    ("@pytest.fixture(params=[1, 2])\ndef f():\n    return 1\n\n@check(1, 't')\ndef test_t(f):\n    pass\n",
     "fixture 'f' is parametrized (not supported)"),
    ("@pytest.mark.parametrize('x', [1])\n@check(1, 't')\ndef test_t(x):\n    pass\n",
     "check test_t has marks (parametrize), which are not supported\n"
     "check test_t asks for fixture 'x', which does not exist (known: cluster, kube, lab, workdir)"),
    ("@check(1, 't')\ndef test_t(nope):\n    pass\n",
     "check test_t asks for fixture 'nope', which does not exist (known: cluster, kube, lab, workdir)"),
    ("def test_plain():\n    pass\n", "grader tests without @check: test_plain"),
    ("X = 1\n", "it has no @check functions"),
])
def test_what_the_engine_does_not_honour_is_refused_by_name(sample, cluster, source, problem):
    sample.grader.write_text(f"import pytest\nfrom ckalab.grading import check\n\n{source}")
    with pytest.raises(CkalabError) as err:
        grading.run(sample, cluster)
    assert str(err.value) == f"The grader {sample.grader} could not run:\n{problem}"


def test_an_edited_grader_is_imported_again(sample, cluster, kube):
    sample.grader.write_text(GRADER.replace('"ConfigMap exists"', '"ConfigMap is there"'))
    assert grading.run_direct(sample, cluster, kube).checks[0].title == "ConfigMap is there"
    sample.grader.write_text(GRADER)
    assert grading.run_direct(sample, cluster, kube).checks[0].title == "ConfigMap exists"


def test_pytest_runs_a_grader_through_the_engine(cluster):
    """`pytest -p ckalab.grading graders/<lab>.py` still works: pytest collects, the engine grades."""
    from conftest import TEST_CLUSTER

    lab = labs.load("rbac-role")
    labs.reset(lab, cluster)
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "ckalab.grading", "-p", "no:cacheprovider",
                          str(lab.grader)], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, CKALAB_CLUSTER=TEST_CLUSTER))
    assert out.returncode == 1, out.stdout + out.stderr
    assert "rbac-role: 0/10 points, 5 of 5 checks failed" in out.stdout
    assert "✘ [0/2] Role exists" in out.stdout
