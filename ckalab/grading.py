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
import importlib.util
import inspect
import os
import re
import signal
import sys
import threading
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


# --- text that leaves ckalab: terminal, XML, CSV ----------------------------------------------

# C0 controls except tab and newline, DEL, and C1 controls; ESC is handled apart (made visible).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1a\x1c-\x1f\x7f-\x9f]")
# What XML 1.0 cannot carry at all, even escaped: lone surrogates and the two non-characters.
_NOT_XML = re.compile(r"[\ud800-\udfff\ufffe\uffff]")


def printable(text, oneline: bool = False) -> str:
    """`text` safe for a terminal, an XML document or a spreadsheet cell. Messages echo values
    from the learner's own objects and bundles carry student-chosen ids, so any of them may
    hold terminal escape sequences or control characters that make XML unreadable. ESC is shown
    as the four characters \\x1b (the sequence stays visible but inert); other control
    characters are dropped; newline and tab are kept, or become spaces with `oneline` (ids,
    file names: one line of a report each)."""
    text = _NOT_XML.sub("\ufffd", _CONTROL.sub("", str(text).replace("\x1b", "\\x1b")))
    return text.replace("\n", " ").replace("\t", " ") if oneline else text


def xml_safe(root):
    """Pass every attribute, text and tail of an ElementTree through printable(), in place,
    just before it is serialised (ElementTree escapes markup but not control characters)."""
    for el in root.iter():
        el.attrib.update({k: printable(v) for k, v in el.attrib.items()})
        if el.text is not None:
            el.text = printable(el.text)
        if el.tail is not None:
            el.tail = printable(el.tail)
    return root


# --- results ----------------------------------------------------------------------------------

PASSED, FAILED, UNAVAILABLE = "passed", "failed", "unavailable"
STATES = (PASSED, FAILED, UNAVAILABLE)
MARKS = {PASSED: "✔", FAILED: "✘", UNAVAILABLE: "–"}
UNAVAILABLE_TEXT = "not available on this backend"


@dataclass
class CheckResult:
    """One check's outcome. `state` is passed, failed or unavailable (the backend cannot run the
    check: `message` says why, and it counts 0 of 0 points, so the maximum is per backend).
    `passed` stays for older readers; it is False for an unavailable check."""
    id: str
    title: str
    passed: bool
    points: int
    max_points: int
    message: str = ""
    hint: str = ""
    state: str = ""

    def __post_init__(self):
        if self.state not in STATES:
            self.state = PASSED if self.passed else FAILED

    @classmethod
    def unavailable(cls, check_id: str, title: str, reason: str) -> "CheckResult":
        return cls(check_id, title, False, 0, 0, reason, "", UNAVAILABLE)


def check_line(state: str, points, max_points, title: str) -> str:
    """The one-line form of a check shared by the text renderings (check, exam report)."""
    if state == UNAVAILABLE:
        return f"{MARKS[UNAVAILABLE]} [-] {title}: {UNAVAILABLE_TEXT}"
    return f"{MARKS.get(state, MARKS[FAILED])} [{points}/{max_points}] {title}"


@dataclass
class GradeResult:
    lab: str
    passed: bool
    score: int
    max_score: int
    duration_s: float
    checks: list[CheckResult] = field(default_factory=list)
    seed: str | None = None

    @classmethod
    def of(cls, lab, checks: list[CheckResult], duration_s: float) -> "GradeResult":
        """Score and verdict from the checks: unavailable ones count neither way."""
        counted = [c for c in checks if c.state != UNAVAILABLE]
        return cls(lab.id, bool(counted) and all(c.state == PASSED for c in counted),
                   sum(c.points for c in counted), sum(c.max_points for c in counted),
                   round(duration_s, 3), checks, lab.seed)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.state == FAILED]

    def unavailable(self) -> list[CheckResult]:
        return [c for c in self.checks if c.state == UNAVAILABLE]

    def render(self) -> str:
        counted = len(self.checks) - len(self.unavailable())
        head = "all checks passed" if self.passed else f"{len(self.failed())} of {counted} checks failed"
        if self.unavailable():
            head += f", {len(self.unavailable())} {UNAVAILABLE_TEXT}"
        lines = [f"{self.lab}: {self.score}/{self.max_score} points, {head} ({self.duration_s:.2f}s)"]
        for c in self.checks:
            lines.append(f"  {check_line(c.state, c.points, c.max_points, c.title)}")
            if c.state != PASSED:
                lines += [f"      {line}" for line in c.message.splitlines()]
                if c.hint and c.state == FAILED:
                    lines.append(f"      hint: {c.hint}")
        return printable("\n".join(lines))


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
    if isinstance(exc, RecursionError):  # a learner's object or file nested without end
        return "This check stopped: what it reads is nested too deeply to be a lab answer. Look for a file or " \
               "object that refers to itself or is nested far deeper than the task needs."
    if isinstance(exc, MemoryError):
        return "This check stopped: what it reads is too large to grade. Look for a file or object far larger " \
               "than the task needs."
    return f"This check could not run ({type(exc).__name__}: {exc}). This is a bug in the grader; please report it."


class CheckTimeout(CkalabError):
    """A check that ran past its time limit (something it reads never ends, or hangs)."""


CHECK_SECONDS = float(os.environ.get("CKALAB_CHECK_SECONDS", "60"))


class _time_limit:
    """Stop one check after CHECK_SECONDS with a CheckTimeout. Uses SIGALRM, so it applies where
    the check runs on the main thread (the CLI, a notebook, the pytest engine); the classroom's
    threads rely on the bounded reads of ckalab.learner_files and the clients' own timeouts."""

    def __init__(self, title: str):
        self.title = title
        self.armed = threading.current_thread() is threading.main_thread() and CHECK_SECONDS > 0

    def _fire(self, *_):
        raise CheckTimeout(f"This check took longer than {CHECK_SECONDS:g} s and was stopped: something it reads "
                           "never ends (a pipe, a huge file or a request that hangs). Look at the files and objects "
                           "this check names.")

    def __enter__(self):
        if self.armed:
            self.old = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, CHECK_SECONDS)
        return self

    def __exit__(self, *exc):
        if self.armed:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.old)
        return False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    meta = getattr(getattr(item, "function", None), "_ckalab_check", None)
    if meta is None or _CONTEXT is None:
        yield
        return
    with _time_limit(meta.title):
        yield


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


def _not_yet(title: str) -> str:
    return f"Not checked yet: first fix \"{title}\"."


def _blocked(meta: CheckMeta, results: list[CheckResult]) -> CheckResult | None:
    """The first check named in `after` that did not pass (failed or unavailable), if any."""
    done = {r.id: r for r in results}
    return next((done[d] for d in meta.after if d in done and done[d].state != PASSED), None)


def _unavailable_after(dep: CheckResult) -> str:
    return f"it builds on \"{dep.title}\", which is {UNAVAILABLE_TEXT} either"


def _skip_reason(exc: BaseException) -> str:
    return str(getattr(exc, "msg", "") or exc).strip() or UNAVAILABLE_TEXT


def pytest_runtest_setup(item):
    meta: CheckMeta = item.function._ckalab_check
    if _CONTEXT is None:
        return
    dep = _blocked(meta, _CONTEXT.results)
    if dep is not None and dep.state == UNAVAILABLE:
        pytest.skip(_unavailable_after(dep))
    if dep is not None:
        raise CheckFailed(_not_yet(dep.title))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    meta: CheckMeta | None = getattr(getattr(item, "function", None), "_ckalab_check", None)
    if meta is None or _CONTEXT is None:
        return
    if report.skipped and report.when in ("setup", "call"):
        # A check skips itself where the backend cannot run it (no exec, no real traffic): it
        # is listed as unavailable, worth 0 of 0, so bundles and renderings still name it.
        _CONTEXT.results.append(CheckResult.unavailable(item.name, meta.title, _skip_reason(call.excinfo.value)))
    elif report.when == "call" or (report.when == "setup" and report.failed):
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
    return GradeResult.of(lab, ctx.results, time.monotonic() - start)


# --- the direct runner: many gradings at once ------------------------------------------------

FIXTURES = {"lab", "kube", "cluster", "workdir"}
_MODULES: dict[str, object] = {}
_ENGINE_LOCK = threading.Lock()


def _fixture_fn(obj):
    """The plain function behind a grader's own @pytest.fixture, or None for anything else."""
    get = getattr(obj, "_get_wrapped_function", None)
    return get() if callable(get) and type(obj).__name__ == "FixtureFunctionDefinition" else None


def _checks(lab) -> tuple[list, dict] | None:
    """The grader's check functions in pytest's order and its own fixtures, or None when it needs
    the full engine (marks, parametrize, generator or scoped fixtures: beyond plain @check)."""
    if lab.id not in _MODULES:
        spec = importlib.util.spec_from_file_location(f"ckalab_grader_{lab.id.replace('-', '_')}", lab.grader)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod  # dataclasses and the like look their module up there
        spec.loader.exec_module(mod)
        _MODULES[lab.id] = mod
    mod = _MODULES[lab.id]
    own = {n: _fixture_fn(o) for n, o in vars(mod).items() if _fixture_fn(o)}
    if any(inspect.isgeneratorfunction(f) or not set(inspect.signature(f).parameters) <= FIXTURES
           for f in own.values()):
        return None
    fns = [(n, f) for n, f in vars(mod).items() if n.startswith("test") and inspect.isfunction(f)]
    plain = all(hasattr(f, "_ckalab_check") and not hasattr(f, "pytestmark")
                and set(inspect.signature(f).parameters) <= FIXTURES | set(own) for _, f in fns)
    return (fns, own) if plain and not hasattr(mod, "pytestmark") else None


def run_direct(lab, cluster, kube) -> GradeResult:
    """Grade like run() (same order, `after`, skips, messages) without a pytest session, so many
    gradings can run at once from threads (a classroom). Falls back to run() when the grader
    needs more than plain @check functions and simple fixtures of its own."""
    found = _checks(lab)
    if found is None:
        with _ENGINE_LOCK:  # run() keeps its context in a module global
            return run(lab, cluster)
    fns, own = found
    t0 = time.monotonic()
    base = {"lab": lab, "kube": kube, "cluster": cluster, "workdir": lab.workdir}
    out: list[CheckResult] = []
    for name, fn in fns:
        meta = fn._ckalab_check
        blocked = _blocked(meta, out)
        if blocked is not None and blocked.state == UNAVAILABLE:
            out.append(CheckResult.unavailable(name, meta.title, _unavailable_after(blocked)))
            continue
        if blocked:
            ok, msg = False, _not_yet(blocked.title)
        else:
            try:
                args = {}
                with _time_limit(meta.title):
                    for p in inspect.signature(fn).parameters:  # function-scoped, as in pytest
                        f = own.get(p)
                        args[p] = base[p] if f is None else f(**{q: base[q] for q in inspect.signature(f).parameters})
                    fn(**args)
                ok, msg = True, ""
            except pytest.skip.Exception as exc:  # the backend cannot run it: listed, not scored
                out.append(CheckResult.unavailable(name, meta.title, _skip_reason(exc)))
                continue
            except (Exception, pytest.fail.Exception) as exc:  # noqa: BLE001 - a message, never a traceback
                ok, msg = False, _message(exc)
        out.append(CheckResult(name, meta.title, ok, meta.points if ok else 0, meta.points, msg,
                               "" if ok else meta.hint))
    return GradeResult.of(lab, out, time.monotonic() - t0)
