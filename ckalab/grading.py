"""The grading engine: graders (graders/<lab-id>.py) are pytest-style files whose tests are checks.

A check is a test function decorated with @check(points, title, hint=...). It fails by calling
fail("message for the learner") (or expect(cond, msg)); any other exception is reported as a
failed check with a readable message, never a traceback. There is one engine, `grade(Context)`,
with no module state; `run()` (CLI, notebook lab bar, exam, submit) and `run_direct()` (the
classroom's threads) are its two doors. It does not start pytest: it imports the grader with
`load_grader()` (the only grader loader) and calls the checks itself.

Graders receive fixtures: `lab` (the Lab, with .params and .workdir), `kube` (a Kube bound to
the lab cluster's admin kubeconfig), `cluster` (PKI and component inspection) and `workdir`,
plus their own fixtures (grading.fixture, or @pytest.fixture): function scope is made per check,
module, package and session scope once per grading run; a generator fixture's teardown runs
after its scope. grading.skip (or pytest.skip) in a check or a fixture makes the check
"unavailable". Marks, parametrize, class scope and autouse or parametrized fixtures are refused
with a message naming them. Graders written with grading.fixture/skip are graded without
importing pytest and are still pytest files (see fixture()).
"""

from __future__ import annotations

import inspect
import json
import os
import re
import signal
import sys
import threading
import time
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable

from .errors import CkalabError


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


# --- a grader's own fixtures and skips, without importing pytest ------------------------------
#
# Starting pytest costs a cold `ckalab check` about 80 ms, and the engine needs none of it. A
# grader declares its fixtures with grading.fixture and skips with grading.skip: the engine reads
# them as they are; in a process that has imported pytest already (pytest running a grader, as
# tests/test_engine_equivalence.py does) they are pytest's own fixture and skip, so pytest runs
# the same file with the same meaning.

@dataclass(frozen=True)
class FixtureSpec:
    """What @fixture declares, in the shape of pytest's fixture marker (the engine reads both)."""
    name: str
    scope: str = "function"
    params: object = None
    autouse: bool = False


def fixture(fn: Callable | None = None, *, scope: str = "function", name: str | None = None):
    """@fixture or @fixture(scope="module"), as pytest.fixture (function, module, package or
    session scope; a generator's code after `yield` is its teardown)."""
    def wrap(f):
        f._ckalab_fixture = FixtureSpec(name or f.__name__, scope)
        pytest = sys.modules.get("pytest")
        return pytest.fixture(f, scope=scope, name=name) if pytest is not None else f
    return wrap(fn) if fn is not None else wrap


class Unavailable(BaseException):
    """grading.skip's outcome: the backend cannot run this check. Like pytest's outcomes a
    BaseException, so a grader's `except Exception` does not swallow it."""

    def __init__(self, msg: str = ""):
        super().__init__(msg)
        self.msg = msg


def skip(reason: str) -> None:
    """This check (or every check using this fixture) cannot run on this backend: it is listed as
    unavailable with `reason` and counts 0 of 0 points. pytest.skip where pytest is running."""
    pytest = sys.modules.get("pytest")
    if pytest is not None:
        pytest.skip(reason)
    raise Unavailable(reason)


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
UNAVAILABLE_TEXT = "not available on this backend"


def _record(cls, data, what: str) -> dict:
    """The fields of dataclass `cls` found in `data` (a record read back from JSON): unknown
    keys are left out, so a record written by a newer ckalab still reads; a missing required
    field is a CkalabError naming it, not a TypeError."""
    if not isinstance(data, dict):
        raise CkalabError(f"A {what} record is not an object ({type(data).__name__}).")
    names = {f.name for f in fields(cls)}
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
               and f.name not in data]
    if missing:
        raise CkalabError(f"A {what} record has no {', '.join(missing)}.")
    return {k: v for k, v in data.items() if k in names}


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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CheckResult":
        """A check as stored in an exam report or a result bundle. Older records read too: one
        without `state` (written before states existed) gets it from `passed`, one without
        `hint` (bundles before v2 carried no hints) an empty hint."""
        return cls(**_record(cls, data, "check result"))


@dataclass
class GradeResult:
    """One grading of one lab: the only shape of a lab result. The CLI, the notebook, the exam
    report and the result bundles all hold (or store, with to_dict) this; ckalab.render turns it
    into text, HTML or JUnit."""
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

    @classmethod
    def from_dict(cls, data: dict) -> "GradeResult":
        """A lab result as stored (an exam report's task, a bundle's lab entry: their extra keys
        are ignored), checks included."""
        fields_ = _record(cls, data, "lab result")
        checks = fields_.get("checks") or []
        if not isinstance(checks, list):
            raise CkalabError(f"The checks of lab result '{fields_['lab']}' are not a list.")
        return cls(**{**fields_, "checks": [CheckResult.from_dict(c) for c in checks]})

    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if c.state == FAILED]

    def unavailable(self) -> list[CheckResult]:
        return [c for c in self.checks if c.state == UNAVAILABLE]

    def render(self) -> str:
        """The terminal text of this result (see render.result_text), for tests and assertions."""
        from .render import result_text  # render reads these shapes: imported when asked, no cycle at import

        return result_text(self)


# --- messages and the time limit ---------------------------------------------------------------

def _outcome(name: str):
    """pytest's outcome exception `name` (Skipped, Failed), or None when pytest was never imported:
    a grader can only skip through pytest, so the engine itself never needs to import it."""
    mod = sys.modules.get("_pytest.outcomes")
    return getattr(mod, name, None) if mod is not None else None


def _message(exc: BaseException, cluster=None) -> str:
    if isinstance(exc, CheckFailed):
        return str(exc)
    failed = _outcome("Failed")
    if failed is not None and isinstance(exc, failed):  # pytest.fail("..."): the grader's own words
        return str(getattr(exc, "msg", "") or exc).strip() or "An assertion in the grader failed."
    if isinstance(exc, AssertionError):
        return str(exc).split("\nassert ")[0].strip() or "An assertion in the grader failed."
    if isinstance(exc, CkalabError):
        return str(exc)
    if isinstance(exc, RecursionError):  # a learner's object or file nested without end
        return "This check stopped: what it reads is nested too deeply to be a lab answer. Look for a file or " \
               "object that refers to itself or is nested far deeper than the task needs."
    if isinstance(exc, MemoryError):
        return "This check stopped: what it reads is too large to grade. Look for a file or object far larger " \
               "than the task needs."
    # Only now the client's exception types: a check that raised one has imported them already.
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    if isinstance(exc, ApiException):
        from .kube import api_error_text

        return f"The API server answered {exc.status} ({exc.reason}): {api_error_text(exc)}"
    if isinstance(exc, (HTTPError, ConnectionError)):
        return _unreachable(cluster)
    return f"This check could not run ({type(exc).__name__}: {exc}). This is a bug in the grader; please report it."


def _unreachable(cluster) -> str:
    """Name the commands for this very cluster: a bare 'ckalab up' starts the default one. A shared
    (classroom) cluster is not ckalab's to start, so only say how to look at it."""
    from .cluster import BACKENDS

    if cluster is None or getattr(cluster, "backend", "") not in BACKENDS:
        return "Cannot reach the cluster's API server: check it with 'kubectl cluster-info'."
    from .cluster.base import command, up_command

    return (f"Cannot reach the cluster's API server: check it with '{command('status', cluster.name)}' "
            f"and start it with '{up_command(cluster.name)}'.")


class CheckTimeout(CkalabError):
    """A check that ran past its time limit (something it reads never ends, or hangs)."""


CHECK_SECONDS = float(os.environ.get("CKALAB_CHECK_SECONDS", "60"))


def _timeout_text() -> str:
    return (f"This check took longer than {CHECK_SECONDS:g} s and was stopped: something it reads never ends (a "
            "pipe, a huge file or a request that hangs). Look at the files and objects this check names.")


class _time_limit:
    """Stop one check (its fixtures included) after CHECK_SECONDS with a CheckTimeout. On the
    main thread (the CLI, a notebook, an exam) SIGALRM interrupts the check itself; elsewhere (the
    classroom's worker threads, where signals cannot reach) the check runs in a helper thread
    that the grading stops waiting for, so the result still comes back in time."""

    def __init__(self, title: str):
        self.title = title
        self.main = threading.current_thread() is threading.main_thread()

    def _fire(self, *_):
        raise CheckTimeout(_timeout_text())

    def call(self, fn) -> None:
        if CHECK_SECONDS <= 0:
            fn()
        elif self.main:
            old = signal.signal(signal.SIGALRM, self._fire)
            signal.setitimer(signal.ITIMER_REAL, CHECK_SECONDS)
            try:
                fn()
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
                signal.signal(signal.SIGALRM, old)
        else:
            box: dict = {}

            def target():
                try:
                    fn()
                except BaseException as exc:  # noqa: BLE001 - handed back to the grading thread
                    box["exc"] = exc

            worker = threading.Thread(target=target, name=f"ckalab-check: {self.title}", daemon=True)
            worker.start()
            worker.join(CHECK_SECONDS)
            if worker.is_alive():  # left to finish on its own; its result is not used
                raise CheckTimeout(_timeout_text())
            if "exc" in box:
                raise box["exc"]


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


# --- the one grader loader ---------------------------------------------------------------------

_LOADED: dict[str, tuple[tuple[int, int], object]] = {}
_LOAD_LOCK = threading.Lock()


def load_grader(path: str | Path):
    """Import the grader file at `path` as a module. Every caller (the engine, the gradebook's
    catalogue) goes through here. A module is reused until its file changes (size or mtime), so
    a notebook kernel that lives across edits grades the grader on disk. Raises CkalabError,
    with the reason, when the file is missing or does not import."""
    path = Path(path).absolute()
    try:
        st = path.stat()
    except OSError as exc:
        raise CkalabError(f"No grader at {path} ({exc.strerror}).") from None
    version = (st.st_mtime_ns, st.st_size)
    with _LOAD_LOCK:  # classroom threads ask for the same grader at once: import it once
        hit = _LOADED.get(str(path))
        if hit is not None and hit[0] == version:
            return hit[1]
        import hashlib
        import importlib.util

        from .kube import lazy_kubernetes

        lazy_kubernetes()  # a grader that imports part of the client gets that part only
        # A name per file (two grader folders may hold the same lab id), registered in
        # sys.modules because dataclasses and the like look their module up there.
        name = f"ckalab_grader_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}_" \
               f"{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        try:
            spec.loader.exec_module(mod)
        except Exception as exc:  # noqa: BLE001 - a broken grader is a message, not a traceback
            sys.modules.pop(name, None)
            where = f" (line {exc.lineno})" if isinstance(exc, SyntaxError) and exc.lineno else ""
            raise CkalabError(f"The grader {path} could not run: it does not import{where}: "
                              f"{type(exc).__name__}: {exc}") from None
        _LOADED[str(path)] = (version, mod)
        return mod


# --- what a grader declares: checks and fixtures ---------------------------------------------

BUILTIN = ("lab", "cluster", "kube", "workdir")  # the engine's own fixtures, from the Context
RUN_SCOPES = ("module", "package", "session")     # one grading is one module: set up once per run


@dataclass
class Fixture:
    name: str
    fn: Callable
    scope: str            # "function" (per check) or "run" (module, package, session)
    needs: tuple[str, ...]
    generator: bool


@dataclass
class Check:
    id: str
    fn: Callable
    meta: CheckMeta
    needs: tuple[str, ...]


@dataclass
class Plan:
    checks: list[Check]
    fixtures: dict[str, Fixture]


def _fixture(obj) -> tuple[Callable, object] | None:
    """(plain function, marker) behind a @fixture (grading's) or a @pytest.fixture, for pytest
    >= 8.4 and older 8.x."""
    if inspect.isfunction(obj) and isinstance(getattr(obj, "_ckalab_fixture", None), FixtureSpec):
        return obj, obj._ckalab_fixture
    marker = getattr(obj, "_fixture_function_marker", None)
    if marker is not None and callable(getattr(obj, "_get_wrapped_function", None)):
        return obj._get_wrapped_function(), marker
    marker = getattr(obj, "_pytestfixturefunction", None)
    return (getattr(obj, "__pytest_wrapped__", None) and obj.__pytest_wrapped__.obj or obj, marker) \
        if marker is not None else None


def _params(fn) -> tuple[str, ...]:
    return tuple(inspect.signature(fn).parameters)


def _plan(mod, path) -> Plan:
    """The checks (in file order, as pytest collects them) and fixtures of a grader module.
    Anything the engine would not honour is refused here, naming it, rather than graded wrongly."""
    cached = getattr(mod, "_ckalab_plan", None)
    if cached is not None:
        return cached
    problems: list[str] = []
    fixtures: dict[str, Fixture] = {}
    for attr, obj in vars(mod).items():
        found = _fixture(obj)
        if found is None:
            continue
        fn, marker = found
        name = getattr(marker, "name", None) or attr
        scope = marker.scope if isinstance(marker.scope, str) else "dynamic"
        if scope not in ("function", *RUN_SCOPES):
            problems.append(f"fixture '{name}' has scope '{scope}' (supported: function, module, package, session)")
        if getattr(marker, "params", None) is not None:
            problems.append(f"fixture '{name}' is parametrized (not supported)")
        if getattr(marker, "autouse", False):
            problems.append(f"fixture '{name}' is autouse (not supported: ask for it by name)")
        fixtures[name] = Fixture(name, fn, "function" if scope == "function" else "run", _params(fn),
                                 inspect.isgeneratorfunction(fn))
    if hasattr(mod, "pytestmark"):
        problems.append("module-level pytestmark (marks are not supported)")
    checks, plain = [], []
    for name, fn in vars(mod).items():
        if not (name.startswith("test") and inspect.isfunction(fn)):
            continue
        meta = getattr(fn, "_ckalab_check", None)
        if meta is None:
            plain.append(name)
            continue
        if hasattr(fn, "pytestmark"):
            marks = ", ".join(sorted({m.name for m in fn.pytestmark}))
            problems.append(f"check {name} has marks ({marks}), which are not supported")
        checks.append(Check(name, fn, meta, _params(fn)))
    if plain:
        problems.append(f"grader tests without @check: {', '.join(plain)}")
    known = set(BUILTIN) | set(fixtures)
    for who, needs in [(f"check {c.id}", c.needs) for c in checks] + \
                      [(f"fixture '{f.name}'", f.needs) for f in fixtures.values()]:
        problems += [f"{who} asks for fixture '{n}', which does not exist (known: {', '.join(sorted(known))})"
                     for n in needs if n not in known]
    for f in fixtures.values():
        wider = [n for n in f.needs if f.scope == "run" and n in fixtures and fixtures[n].scope == "function"]
        problems += [f"fixture '{f.name}' (once per grading) asks for function-scoped fixture '{n}'" for n in wider]
    if not checks and not problems:
        problems.append("it has no @check functions")
    if problems:
        raise CkalabError(f"The grader {path} could not run:\n" + "\n".join(problems))
    mod._ckalab_plan = Plan(checks, fixtures)
    return mod._ckalab_plan


# --- the engine -------------------------------------------------------------------------------

class Context:
    """Everything one grading run needs, passed explicitly (no module state): several gradings
    may run at once, from threads. `kube` is made on first use (a check that never asks for it
    costs no API client)."""

    def __init__(self, lab, cluster, kube=None, reuse_client: bool = False):
        self.lab, self.cluster, self._kube, self.reuse_client = lab, cluster, kube, reuse_client
        self.run_values: dict[str, tuple[bool, object]] = {}  # fixture -> (ok, value or exception)
        self.teardowns: list = []                               # run-scoped generator fixtures

    @property
    def kube(self):
        if self._kube is None:
            make = _client if self.reuse_client else _new_client
            self._kube = make(self.cluster.kubeconfig)
        return self._kube

    def builtin(self, name: str):
        return {"lab": lambda: self.lab, "cluster": lambda: self.cluster, "kube": lambda: self.kube,
                "workdir": lambda: self.lab.workdir}[name]()


def _new_client(kubeconfig):
    from .kube import Kube

    return Kube(kubeconfig)


_CLIENTS = threading.local()


def _client(kubeconfig):
    """A Kube kept per thread and kubeconfig file version: a notebook grades the same cluster
    again and again, and a new client costs a TLS handshake and API discovery every time. A
    rewritten kubeconfig (a new cluster) gets a new client."""
    path = Path(kubeconfig)
    try:
        st = path.stat()
    except OSError:
        return _new_client(path)  # says which kubeconfig is missing
    key = (st.st_mtime_ns, st.st_size)
    kept = getattr(_CLIENTS, "by_path", None)
    if kept is None:
        kept = _CLIENTS.by_path = {}
    hit = kept.get(str(path))
    if hit is None or hit[0] != key:
        hit = kept[str(path)] = (key, _new_client(path))
    return hit[1]


def _value(name: str, plan: Plan, ctx: Context, local: dict, teardowns: list):
    """The value of fixture `name` for one check, made once per check (function scope) or once
    per grading run (module/package/session scope; its exception too, as pytest re-raises it)."""
    if name in local:
        return local[name]
    f = plan.fixtures.get(name)
    if f is None:
        local[name] = ctx.builtin(name)
        return local[name]
    if f.scope == "run" and name in ctx.run_values:
        ok, value = ctx.run_values[name]
        if not ok:
            raise value
        return value
    try:
        args = {n: _value(n, plan, ctx, local, teardowns) for n in f.needs}
        if f.generator:
            gen = f.fn(**args)
            value = next(gen)
            (ctx.teardowns if f.scope == "run" else teardowns).append(gen)
        else:
            value = f.fn(**args)
    except BaseException as exc:
        if f.scope == "run" and (isinstance(exc, Exception) or _is_outcome(exc)):
            ctx.run_values[name] = (False, exc)
        raise
    if f.scope == "run":
        ctx.run_values[name] = (True, value)
    else:
        local[name] = value
    return value


def _is_outcome(exc: BaseException) -> bool:
    """grading.skip, pytest.skip/fail: BaseExceptions, but a check's outcome rather than a stop request."""
    if isinstance(exc, Unavailable):
        return True
    mod = sys.modules.get("_pytest.outcomes")
    return mod is not None and isinstance(exc, mod.OutcomeException)


def _finish(gens: list) -> None:
    """Run generator fixtures' teardown, newest first. Its errors are not the learner's: they
    neither change a result nor stop grading."""
    for gen in reversed(gens):
        try:
            next(gen)
        except StopIteration:
            pass
        except Exception:  # noqa: BLE001,S110 - see above
            pass
    gens.clear()


def _one(check: Check, plan: Plan, ctx: Context, done: list[CheckResult]) -> CheckResult:
    meta = check.meta
    dep = _blocked(meta, done)
    if dep is not None and dep.state == UNAVAILABLE:
        return CheckResult.unavailable(check.id, meta.title, _unavailable_after(dep))
    if dep is not None:
        return CheckResult(check.id, meta.title, False, 0, meta.points, _not_yet(dep.title), meta.hint)
    teardowns: list = []
    skipped = _outcome("Skipped")
    try:
        local: dict = {}
        _time_limit(meta.title).call(
            lambda: check.fn(**{n: _value(n, plan, ctx, local, teardowns) for n in check.needs}))
        ok, msg = True, ""
    except BaseException as exc:  # noqa: BLE001 - a message, never a traceback
        skipped = skipped or _outcome("Skipped")  # the check may have imported pytest just now
        if isinstance(exc, Unavailable) or (skipped is not None and isinstance(exc, skipped)):
            # the backend cannot run it: listed, not scored
            return CheckResult.unavailable(check.id, meta.title, _skip_reason(exc))
        if not (isinstance(exc, Exception) or _is_outcome(exc)):
            raise  # KeyboardInterrupt, SystemExit: the user's, not the check's
        ok, msg = False, _message(exc, ctx.cluster)
    finally:
        _finish(teardowns)
    return CheckResult(check.id, meta.title, ok, meta.points if ok else 0, meta.points, msg, "" if ok else meta.hint)


def grade(ctx: Context) -> GradeResult:
    """THE engine: run the checks of ctx.lab's grader in file order, honouring `after`, fixture
    scopes, skips (-> unavailable) and the per-check time limit. Raises CkalabError when the
    grader itself cannot run; a check's own error is a failed check with a readable message."""
    start = time.monotonic()
    plan = _plan(load_grader(ctx.lab.grader), ctx.lab.grader)
    out: list[CheckResult] = []
    try:
        for c in plan.checks:
            out.append(_one(c, plan, ctx, out))
    finally:
        _finish(ctx.teardowns)
    return GradeResult.of(ctx.lab, out, time.monotonic() - start)


def run(lab, cluster, kube=None) -> GradeResult:
    """Grade `lab` on `cluster` (the CLI, notebook, exam, submit). Says how to start a cluster
    that is not running; raises CkalabError when grading itself cannot happen."""
    if not Path(lab.grader).is_file():
        raise CkalabError(f"No grader for lab '{lab.id}' at {lab.grader}.")
    from . import labs  # labs imports this module

    labs.require_running(cluster)
    return grade(Context(lab, cluster, kube, reuse_client=True))


def run_direct(lab, cluster, kube) -> GradeResult:
    """run() for callers that know their cluster answers and bring a Kube per thread (the
    classroom grades many students at once): the same engine, without the status probe."""
    return grade(Context(lab, cluster, kube))


# --- `pytest -p ckalab.grading graders/x.py` -----------------------------------------------------

def pytest_runtestloop(session):
    """Graders are still pytest files: with `pytest -p ckalab.grading graders/<lab>.py` pytest
    collects them and the engine above grades each one (the lab cluster of $CKALAB_CLUSTER, the
    variant of $CKALAB_SEED), so there is no second engine whose results could differ."""
    if session.config.option.collectonly or not session.items:
        return None
    from . import labs
    from .cluster import get_cluster

    report = session.config.pluginmanager.get_plugin("terminalreporter")
    say = report.write_line if report is not None else print
    cluster = get_cluster(os.environ.get("CKALAB_CLUSTER", "ckalab"))
    failed = 0
    for path in dict.fromkeys(Path(str(item.path)) for item in session.items):
        try:
            lab = labs.load(path.stem, os.environ.get("CKALAB_SEED"))
            if Path(lab.grader).resolve() != path.resolve():
                raise CkalabError(f"{path} is not the grader of lab '{lab.id}' ({lab.grader}): set "
                                  "CKALAB_GRADERS_DIR to its folder.")
            result = run(lab, cluster)
        except CkalabError as exc:
            say(f"error: {exc}")
            failed += 1
            continue
        say(result.render())
        failed += len(result.failed())
    session.testsfailed = failed
    return True
