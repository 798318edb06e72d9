"""The engine (grading.grade: no pytest session) against pytest itself, over every lab.

Graders are written as pytest files, and the engine promises pytest's meaning for what they use:
file order, fixtures with their scopes, pytest.skip, a message per failure. Here pytest runs each
grader for real, with the engine's four fixtures supplied by a plugin of this test, and every
check must come out the same (state and message) as the engine's, on a fresh start and on the
solved lab. The only intended difference is `after`: the engine does not run a check whose
prerequisite failed (pytest knows no `after`), so those checks are compared on the engine's
side only (they must say which check to fix first).
"""

from __future__ import annotations

import os
import re

import pytest

from ckalab import grading, labs
from conftest import skip_unless_runs_on
from ckalab.kube import Kube


class _Reference:
    """A pytest plugin: the engine's fixtures, and each check's outcome as pytest sees it."""

    def __init__(self, lab, cluster):
        self._lab, self._cluster = lab, cluster
        self.outcomes: dict[str, tuple[str, str]] = {}

    @pytest.fixture(scope="session")
    def lab(self):
        return self._lab

    @pytest.fixture(scope="session")
    def cluster(self):
        return self._cluster

    @pytest.fixture(scope="session")
    def kube(self):
        return Kube(self._cluster.kubeconfig)

    @pytest.fixture(scope="session")
    def workdir(self):
        return self._lab.workdir

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        report = (yield).get_result()
        if report.skipped and item.name not in self.outcomes:
            self.outcomes[item.name] = (grading.UNAVAILABLE, grading._skip_reason(call.excinfo.value))
        elif report.failed and item.name not in self.outcomes:
            self.outcomes[item.name] = (grading.FAILED, grading._message(call.excinfo.value, self._cluster))
        elif report.when == "call" and report.passed:
            self.outcomes[item.name] = (grading.PASSED, "")


def _pytest_outcomes(lab, cluster) -> dict[str, tuple[str, str]]:
    ref = _Reference(lab, cluster)
    code = pytest.main([str(lab.grader), "-p", "no:terminal", "-p", "no:cacheprovider", "-p", "no:randomly",
                        "-p", "no:timeout", "--import-mode=importlib", "-s", "-c", os.devnull,
                        "--rootdir", str(lab.grader.parent), "-W", "ignore::DeprecationWarning"], plugins=[ref])
    assert code in (0, 1), f"pytest could not run {lab.grader} (exit {int(code)})"
    return ref.outcomes


def _compare(lab, cluster, when: str) -> None:
    engine = labs.check(lab, cluster)  # as `ckalab check` grades (a lab may leave the API server down)
    ref = _pytest_outcomes(lab, cluster)
    assert [c.id for c in engine.checks] == list(ref), f"{lab.id} ({when}): not the same checks in the same order"
    titles = {c.id: c.title for c in engine.checks}
    for c in engine.checks:
        meta_after = [titles[d] for d in getattr(lab_check(lab, c.id), "after", ())]
        # Only a declared `after` is the engine's own: a grader may say "first fix ..." itself
        # (real-node checks that build on the spec checks do), which pytest must say too.
        if meta_after and (c.message.startswith("Not checked yet: first fix ") or c.message.startswith("it builds on ")):
            assert any(f'"{t}"' in c.message for t in meta_after), (lab.id, when, c.id, c.message)
            continue
        assert (c.state, _same_run(c.message)) == (ref[c.id][0], _same_run(ref[c.id][1])), \
            f"{lab.id} ({when}), check {c.id}"


def _same_run(message: str) -> str:
    """A message with what differs from one grading to the next by design made equal: the name of
    a probe object a check creates (encryption-at-rest writes a fresh Secret each time), and the
    runtime's sentence on a broken API server's container, a moment's observation: how far its
    crash loop has got (apiserver-repair's etcd faults: running in one grading, exited in the
    next), or none at all while the kubelet swaps the old pod for the edited one (10-15 s after
    the setup's edit: CI on 1262b69 saw the old container exited, then none)."""
    message = re.sub(r"ckalab-probe-[0-9a-f]{8}", "ckalab-probe-<random>", message)
    message = re.sub(r"The node's container runtime has no kube-apiserver container at all\.",
                     "<the runtime's kube-apiserver container>", message)
    return re.sub(r"On the node, the kubelet has started its container \d+ times? since the manifest last changed; "
                  r"the newest is \w+\.", "<the runtime's kube-apiserver container>", message)


def lab_check(lab, check_id: str):
    return getattr(grading.load_grader(lab.grader), check_id)._ckalab_check


@pytest.mark.parametrize("lab_id", labs.lab_ids())
def test_engine_and_pytest_agree_check_by_check(lab_id, cluster):
    lab = labs.load(lab_id)
    skip_unless_runs_on(lab, cluster, "its own module compares them there")
    labs.reset(lab, cluster, clean=True)  # a fresh start: the learner's files set aside, setup applied
    _compare(lab, cluster, "fresh start")
    labs.solve(lab, cluster)
    _compare(lab, cluster, "solved")
    labs.reset(lab, cluster, clean=True)
