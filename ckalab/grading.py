"""The grading engine: graders are pytest files (graders/<lab-id>.py) whose tests are checks.

A check is a test function decorated with @check(points, title, hint=...). It fails by calling
fail("message for the learner") (or expect(cond, msg)); any other exception is reported as a
failed check with a readable message, never a traceback. `run()` executes a grader in-process
and returns a GradeResult that the CLI, the notebook lab bar and the gradebook all render.

Graders receive fixtures: `lab` (the Lab, with .params and .workdir), `kube` (a Kube bound to
the lab cluster's admin kubeconfig), `cluster` (PKI and component inspection) and `workdir`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from .errors import CkalabError, ClusterNotRunning


class CheckFailed(AssertionError):
    """A check's learner-facing failure: the message says what is wrong and expected vs actual."""


def fail(message: str) -> None:
    raise CheckFailed(message)


def expect(condition, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


@dataclass
class CheckMeta:
    points: int
    title: str
    hint: str = ""
    after: tuple[str, ...] = ()


def check(points: int, title: str, hint: str = "", after: str | tuple[str, ...] = ()) -> Callable:
    """Mark a test as a check worth `points`. `after` names checks that must pass first
    (coarse to fine): when one fails, this one reports "not checked yet" instead of piling on."""
    def wrap(fn):
        fn._ckalab_check = CheckMeta(points, title, hint, (after,) if isinstance(after, str) else tuple(after))
        return fn
    return wrap


@dataclass
class CheckResult:
    id: str
    title: str
    passed: bool
    points: int
    max_points: int
    message: str = ""
    hint: str = ""


@dataclass
class GradeResult:
    lab: str
    passed: bool
    score: int
    max_score: int
    duration_s: float
    checks: list[CheckResult] = field(default_factory=list)
    seed: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def render(self) -> str:
        head = "all checks passed" if self.passed else f"{len(self.failed())} of {len(self.checks)} checks failed"
        lines = [f"{self.lab}: {self.score}/{self.max_score} points, {head} ({self.duration_s:.2f}s)"]
        for c in self.checks:
            mark = "✔" if c.passed else "✘"
            lines.append(f"  {mark} [{c.points}/{c.max_points}] {c.title}")
            if not c.passed:
                lines += [f"      {line}" for line in c.message.splitlines()]
                if c.hint:
                    lines.append(f"      hint: {c.hint}")
        return "\n".join(lines)


# --- the pytest plugin -----------------------------------------------------------------------

@dataclass
class _Context:
    lab: object
    cluster: object
    results: list[CheckResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


_CONTEXT: _Context | None = None


def _context(request) -> _Context:
    """The runner's context, or (plain `pytest -p ckalab.grading graders/x.py`) one from the env."""
    global _CONTEXT
    if _CONTEXT is None:
        from . import labs
        from .cluster import get_cluster

        lab = labs.load(Path(str(request.node.path)).stem, os.environ.get("CKALAB_SEED"))
        _CONTEXT = _Context(lab, get_cluster(os.environ.get("CKALAB_CLUSTER", "ckalab")))
    return _CONTEXT


@pytest.fixture(scope="session")
def lab(request):
    return _context(request).lab


@pytest.fixture(scope="session")
def cluster(request):
    return _context(request).cluster


@pytest.fixture(scope="session")
def kube(request):
    from .kube import Kube

    return Kube(_context(request).cluster.kubeconfig)


@pytest.fixture(scope="session")
def workdir(lab) -> Path:
    return lab.workdir


def _message(exc: BaseException) -> str:
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    from .kube import api_error_text

    if isinstance(exc, CheckFailed):
        return str(exc)
    if isinstance(exc, AssertionError):
        return str(exc).split("\nassert ")[0].strip() or "An assertion in the grader failed."
    if isinstance(exc, ApiException):
        return f"The API server answered {exc.status} ({exc.reason}): {api_error_text(exc)}"
    if isinstance(exc, (HTTPError, ConnectionError)):
        return "Cannot reach the cluster's API server: check it with 'ckalab status' and start it with 'ckalab up'."
    if isinstance(exc, CkalabError):
        return str(exc)
    return f"This check could not run ({type(exc).__name__}: {exc}). This is a bug in the grader; please report it."


def pytest_configure(config):
    if _CONTEXT is not None:
        # The engine keeps only each failure's message: building tracebacks (reading source
        # files for every failed check) was most of the time spent grading. (--tb belongs to
        # the terminal plugin, which the runner disables, so set the option directly.)
        config.option.tbstyle = "no"


def pytest_collection_modifyitems(session, config, items):
    missing = [i.name for i in items if not hasattr(getattr(i, "function", None), "_ckalab_check")]
    if missing:
        ctx = _CONTEXT
        if ctx is not None:
            ctx.errors.append(f"grader tests without @check: {', '.join(missing)}")


def pytest_runtest_setup(item):
    meta: CheckMeta = item.function._ckalab_check
    if _CONTEXT is None:
        return
    done = {r.id: r for r in _CONTEXT.results}
    for dep in meta.after:
        if dep in done and not done[dep].passed:
            raise CheckFailed(f"Not checked yet: first fix \"{done[dep].title}\".")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    meta: CheckMeta | None = getattr(getattr(item, "function", None), "_ckalab_check", None)
    if meta is None or _CONTEXT is None:
        return
    if report.when == "call" or (report.when == "setup" and report.failed):
        passed = report.passed
        message = "" if passed else _message(call.excinfo.value)
        _CONTEXT.results.append(CheckResult(item.name, meta.title, passed, meta.points if passed else 0,
                                            meta.points, message, "" if passed else meta.hint))


def pytest_collectreport(report):
    if report.failed and _CONTEXT is not None:
        _CONTEXT.errors.append(str(report.longrepr)[-2000:])


# --- the runner ------------------------------------------------------------------------------

def run(lab, cluster) -> GradeResult:
    """Grade `lab` on `cluster` in-process. Raises CkalabError when grading itself cannot happen."""
    global _CONTEXT
    if not lab.grader.is_file():
        raise CkalabError(f"No grader for lab '{lab.id}' at {lab.grader}.")
    status = cluster.status()
    if status.state != "running":
        from .cluster.base import up_command

        raise ClusterNotRunning(f"Cluster '{cluster.name}' is not running ({status.state}): "
                                f"run '{up_command(cluster.name)}'.")
    start = time.monotonic()
    # pytest reuses an already-imported module of the same name: drop it so the grader on disk
    # is the one that runs (a notebook kernel lives across edits and across labs).
    grader = str(lab.grader)
    for name, mod in list(sys.modules.items()):
        if name == lab.grader.stem or getattr(mod, "__file__", None) == grader:
            del sys.modules[name]
    _CONTEXT = _Context(lab, cluster)
    try:
        args = [str(lab.grader), "-p", "ckalab.grading", "-p", "no:terminal", "-p", "no:cacheprovider",
                "-p", "no:timeout", "-p", "no:randomly",
                # pytest's unraisable-exception plugin runs gc.collect() around every test:
                # over a second per grader on a busy machine, for warnings we never show.
                "-p", "no:unraisableexception", "--import-mode=importlib", "-s",
                "-c", os.devnull, "--rootdir", str(lab.grader.parent), "-W", "ignore::DeprecationWarning"]
        code = pytest.main(args)
        ctx = _CONTEXT
    finally:
        _CONTEXT = None
    if ctx.errors or (code not in (0, 1) and not ctx.results):
        detail = "\n".join(ctx.errors) or f"pytest exit code {int(code)}"
        raise CkalabError(f"The grader {lab.grader} could not run:\n{detail}")
    score = sum(r.points for r in ctx.results)
    return GradeResult(
        lab=lab.id, passed=bool(ctx.results) and all(r.passed for r in ctx.results), score=score,
        max_score=sum(r.max_points for r in ctx.results), duration_s=round(time.monotonic() - start, 3),
        checks=ctx.results, seed=lab.seed,
    )
