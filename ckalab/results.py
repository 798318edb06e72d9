"""Result bundles (the learner's machine grades, the result travels) and the instructor's gradebook.

`submit` grades the labs the learner worked on, where the cluster is, and writes a JSON bundle:
student, per-lab seed and parameters, per-check results, times, ckalab version and the sha256 of
the lab files and grader used (Lab.files_digest). The bundle is signed with HMAC-SHA256 under the
course key the instructor hands out.

`gradebook` verifies every bundle against the instructor's own copy of the labs: signature,
digests (an edited grader or lab is detected), parameters recomputed from the seed, and the check
list, titles and points of the instructor's grader (a hand-edited score is detected even by
someone who holds the key). Every check is in the bundle with its state: passed, failed, or
unavailable (the learner's backend cannot run it, e.g. real traffic on the local backend); an
unavailable check counts 0 of 0, so each bundle's maximum is that of the learner's cluster, and
it is accepted only for a lab that declares a `need` that cluster lacked (the bundle records the
features the cluster offered: the local backend offers exec and traffic with real nodes only). It never raises on a
bad file: every rejected bundle is listed with its reason (size and JSON nesting are capped
before parsing) and the rest are graded. Everything a bundle carries is passed through
grading.printable() where it is rendered (CSV, XML, terminal), and CSV cells that a spreadsheet
would run as a formula are neutralised.

Format v2 (`ckalab-result/v2`) lists every check with its `state`. v1 bundles are still read (a
check's state follows from `passed`); a v1 bundle from a backend that left a check out is
rejected and the reason says to submit again with this version.

The key is shared by the whole class, so the signature proves "made with the course key", not
"made by this student": it stops casual edits, not a determined student with the key.

The gradebook in the formats learning platforms import (Canvas, Moodle, Gradescope) is built on
this module in `exports`; nothing here imports it.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import json
import os
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import __version__, grading, home, labs, render
from .errors import CkalabError

FORMAT = "ckalab-result/v2"
FORMATS_READ = ("ckalab-result/v1", FORMAT)
MAX_BUNDLE_BYTES = 2_000_000
MAX_JSON_DEPTH = 32   # a bundle nests 5 levels; deeper is not a bundle (and would exhaust the stack)
DUPLICATE_RULES = ("flag", "newest", "best")
SEED_RULES = ("any", "student")
MAX_STUDENT_ID = 200   # one cell of a row; a longer id is not an id
KEY_ENV = "CKALAB_COURSE_KEY_FILE"


# --- the course key --------------------------------------------------------------------------

def default_key_file() -> Path:
    return Path(os.environ.get(KEY_ENV) or home.home() / "course.key")


def read_key(path: str | Path | None) -> bytes:
    p = Path(path) if path else default_key_file()
    try:
        key = p.read_bytes().strip()
    except OSError as exc:
        raise CkalabError(f"Cannot read the course key {p}: {exc.strerror}. The instructor hands it out "
                          f"(pass --key-file F, or set {KEY_ENV}).") from None
    if len(key) < 16:
        raise CkalabError(f"The course key {p} is too short ({len(key)} bytes; at least 16).")
    return key


def new_key(path: str | Path) -> Path:
    """Write a fresh random course key (readable by its owner only); never overwrites one."""
    p = Path(path)
    if p.exists():
        raise CkalabError(f"{p} exists; a course key is never overwritten (bundles signed with it would be lost).")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32) + "\n")
    return p


def _canonical(payload: dict) -> bytes:
    return json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def sign(payload: dict, key: bytes) -> dict:
    """The payload with a `signature` over everything else in it."""
    body = {k: v for k, v in payload.items() if k != "signature"}
    mac = hmac.new(key, _canonical(body), hashlib.sha256).hexdigest()
    return {**body, "signature": {"alg": "HMAC-SHA256", "key_id": hashlib.sha256(key).hexdigest()[:12],
                                  "value": mac}}


def signature_ok(bundle: dict, key: bytes) -> bool:
    sig = bundle.get("signature")
    if not isinstance(sig, dict) or not isinstance(sig.get("value"), str):
        return False
    expected = sign(bundle, key)["signature"]["value"]
    return hmac.compare_digest(expected, sig["value"])


# --- submit (the learner's machine) ----------------------------------------------------------

def started_labs() -> dict[str, str | None]:
    """lab id -> the seed it was started with, from the marker `start` leaves in each work dir."""
    out = {}
    root = home.work_root()
    for marker in sorted(root.glob(f"*/{labs.MARKER}")) if root.is_dir() else []:
        try:
            rec = json.loads(marker.read_text())
            if rec["lab"] == marker.parent.name:  # not a copy set aside (e.g. before an exam)
                out[str(rec["lab"])] = rec.get("seed")
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def lab_entry(lab: labs.Lab, result: grading.GradeResult, started_at: float | None = None,
              digest: str | None = None) -> dict:
    """A bundle's record of one lab: the GradeResult's own record (GradeResult.from_dict reads it
    back), plus what the gradebook verifies it against (seed, parameters, digest) and when."""
    return {**result.to_dict(), "lab": lab.id, "seed": lab.seed, "params": lab.params,
            "digest": digest or lab.files_digest(), "started_at": started_at, "graded_at": round(time.time(), 3)}


def make_bundle(student: str, entries: list[dict], key: bytes, extra: dict | None = None) -> dict:
    student = (student or "").strip()
    if not student:
        raise CkalabError("--student is empty: give your student id as the instructor listed it.")
    return sign({"format": FORMAT, "student": student, "ckalab_version": __version__,
                 "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 **(extra or {}), "labs": entries}, key)


def submit(student: str, cluster, out: str | Path, key_file: str | Path | None = None,
           lab_ids: list[str] | None = None, seed: str | None = None) -> dict:
    """Grade the labs (those started here, or `lab_ids`) and write the signed bundle to `out`."""
    key = read_key(key_file)
    started = started_labs()
    ids = lab_ids or [i for i in labs.lab_ids() if i in started]
    if not ids:
        raise CkalabError("No lab has been started here, so there is nothing to submit. "
                          "Start one with 'ckalab start LAB --seed YOUR-ID', or name them with --labs.")
    chosen = [labs.load(i, seed if seed is not None else started.get(i)) for i in ids]
    for lab in chosen:  # refuse before grading anything: a running exam's task gets no grade here
        labs.guard_exam(lab)
    entries = []
    for lab in chosen:
        marker = lab.workdir / labs.MARKER
        t0 = marker.stat().st_mtime if marker.exists() else None
        entries.append(lab_entry(lab, labs.check(lab, cluster), t0))
    offered = getattr(cluster, "offered", None)
    bundle = make_bundle(student, entries, key, {"backend": getattr(cluster, "backend", "?"),
                                                 "features": sorted(offered()) if offered else []})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bundle, indent=2) + "\n")
    return bundle


# --- gradebook (the instructor's machine) ----------------------------------------------------

@dataclass
class Catalogue:
    """The instructor's own copy of the labs: digests, each grader's checks, and lab needs."""
    _digest: dict = field(default_factory=dict)
    _checks: dict = field(default_factory=dict)

    def known(self, lab_id: str) -> bool:
        return lab_id in labs.lab_ids()

    def digest(self, lab_id: str) -> str:
        if lab_id not in self._digest:
            self._digest[lab_id] = labs.load(lab_id).files_digest()
        return self._digest[lab_id]

    def grader(self, lab_id: str) -> dict[str, grading.CheckMeta]:
        """check id -> its @check metadata (title, points), from the grader (trusted instructor code)."""
        if lab_id not in self._checks:
            mod = grading.load_grader(labs.graders_root() / f"{lab_id}.py")
            self._checks[lab_id] = {name: fn._ckalab_check for name, fn in vars(mod).items()
                                    if callable(fn) and hasattr(fn, "_ckalab_check")}
        return self._checks[lab_id]

    def checks(self, lab_id: str) -> dict[str, int]:
        """check id -> points."""
        return {i: m.points for i, m in self.grader(lab_id).items()}

    def full_max(self, lab_id: str) -> int:
        """The lab's maximum when every check can run (the kind backend)."""
        return sum(self.checks(lab_id).values())

    def lacks(self, lab_id: str, backend, features: frozenset[str] | None = None) -> list[str]:
        """The lab's needs that the learner's cluster did not offer: what `backend` always offers
        and the `features` the bundle recorded (the local backend offers more with real nodes
        than with kwok nodes). Only then may a check be unavailable."""
        from .cluster import features_of

        return labs.lacking(labs.load(lab_id), features_of(backend) | (features or frozenset()))


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _shape_problems(lab_id: str, entry: dict) -> list[str]:
    """Types the gradebook relies on when it sorts and adds entries (signed is not well-formed)."""
    bad = [k for k in ("score", "max_score") if not _is_int(entry.get(k))]
    bad += [k for k in ("graded_at", "duration_s") if entry.get(k) is not None and not _is_num(entry.get(k))]
    for c in entry["checks"]:
        if not (isinstance(c.get("id"), str) and isinstance(c.get("title"), str) and _is_int(c.get("points"))
                and _is_int(c.get("max_points")) and isinstance(c.get("message", ""), str)
                and isinstance(c.get("passed"), bool)):
            bad.append(f"check {str(c.get('id'))[:40]!r}")
    return [f"malformed: wrong type of {', '.join(bad)} in '{lab_id}'"] if bad else []


def _check_state(c: dict, v1: bool) -> str:
    """A v1 bundle has no states: passed or failed follows from `passed`."""
    if v1 and "state" not in c:
        return grading.PASSED if c.get("passed") else grading.FAILED
    return c.get("state")


def _problems_in_lab(entry, cat: Catalogue, bundle: dict | None = None, seeds: str = "any") -> list[str]:
    bundle = bundle or {}
    if not isinstance(entry, dict) or not isinstance(entry.get("lab"), str):
        return ["malformed: a lab entry is not an object with a 'lab' id"]
    lab_id = entry["lab"]
    if not cat.known(lab_id):
        return [f"unknown lab '{grading.printable(lab_id, oneline=True)[:60]}'"]
    out = []
    if entry.get("digest") != cat.digest(lab_id):
        out.append(f"grader hash mismatch for '{lab_id}' (the lab or grader files differ from the course's; "
                   "update ckalab and submit again)")
    seed = entry.get("seed")
    student = str(bundle.get("student", "")).strip()
    if seed is not None and not isinstance(seed, str):
        out.append(f"malformed: seed of '{lab_id}' is not a string")
    elif entry.get("params") != labs.load(lab_id, seed).params:
        out.append(f"parameters of '{lab_id}' do not match its seed")
    elif seeds == "student" and seed != student:
        shown = "none (the canonical names)" if seed is None else f"'{grading.printable(seed, oneline=True)[:60]}'"
        out.append(f"seed of '{lab_id}' is {shown}, not the student's id (seeds are per student here)")
    checks = entry.get("checks")
    if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
        return out + [f"malformed: checks of '{lab_id}' are not a list of objects"]
    shape = _shape_problems(lab_id, entry)
    if shape:
        return out + shape
    v1 = bundle.get("format") == FORMATS_READ[0]
    grader = cat.grader(lab_id)
    got = {c["id"]: c for c in checks}
    missing, extra = [i for i in grader if i not in got], [i for i in got if i not in grader]
    if missing or extra or len(got) != len(checks):
        detail = "; ".join(x for x in (f"missing {', '.join(missing)}" if missing else "",
                                       f"not in the grader: {', '.join(extra)[:120]}" if extra else "",
                                       "a check is listed twice" if len(got) != len(checks) else "") if x)
        if v1 and missing:
            detail += " (a v1 bundle leaves out the checks its backend cannot run: submit again with this ckalab)"
        return out + [f"checks of '{lab_id}' do not match the course grader: {grading.printable(detail, oneline=True)}"]
    backend = str(bundle.get("backend"))
    recorded = bundle.get("features")
    features = (frozenset(recorded) if isinstance(recorded, list) and all(isinstance(f, str) for f in recorded)
                else None)
    for c in checks:
        meta, state = grader[c["id"]], _check_state(c, v1)
        worth = 0 if state == grading.UNAVAILABLE else meta.points
        if c["title"] != meta.title or (c["max_points"] != worth and state in grading.STATES):
            out.append(f"checks of '{lab_id}' do not match the course grader: {c['id']} differs in title or points")
        elif state not in grading.STATES:
            out.append(f"malformed: check {c['id']} of '{lab_id}' has no state (passed, failed or unavailable)")
        elif state == grading.UNAVAILABLE and not cat.lacks(lab_id, backend, features):
            out.append(f"check {c['id']} of '{lab_id}' is marked unavailable, but the "
                       f"{grading.printable(backend, oneline=True)[:30]} backend can run every check of this lab")
        elif c["points"] != (worth if state == grading.PASSED else 0) or c["passed"] != (state == grading.PASSED):
            out.append(f"score of '{lab_id}' does not add up from its checks")
    if out:
        return list(dict.fromkeys(out))
    counted = [c for c in checks if _check_state(c, v1) != grading.UNAVAILABLE]
    if entry["score"] != sum(c["points"] for c in counted) or entry["max_score"] != sum(c["max_points"] for c in counted) \
            or entry.get("passed") is not (bool(counted) and all(c["passed"] for c in counted)):
        out.append(f"score of '{lab_id}' does not add up from its checks")
    return out


def json_depth(text: str, limit: int) -> int:
    """How deeply arrays and objects nest in `text`, counting no further than limit + 1.
    Scanned before parsing: the standard parser recurses once per level and a file of a few
    hundred kilobytes of '[' exhausts the stack (RecursionError)."""
    depth = deepest = 0
    # Strings are matched whole (the unrolled form runs in one pass even over megabytes of text)
    # so brackets inside them do not count.
    for m in re.finditer(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', text):
        tok = m.group()
        if tok in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        elif tok in "]}":
            depth -= 1
    return deepest


def parse(raw: bytes) -> tuple[object, str]:
    """(value, "") or (None, the reason it is not a readable bundle). Never raises."""
    if len(raw) > MAX_BUNDLE_BYTES:
        return None, f"malformed: larger than {MAX_BUNDLE_BYTES} bytes"
    try:
        text = raw.decode("utf-8")
        if json_depth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
            return None, f"malformed: JSON nested deeper than {MAX_JSON_DEPTH} levels"
        return json.loads(text), ""
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return None, f"malformed JSON ({type(exc).__name__}: {grading.printable(str(exc), oneline=True)[:80]})"


def verify(raw: bytes, key: bytes, cat: Catalogue, seeds: str = "any") -> tuple[dict | None, list[str]]:
    """(bundle, []) when it is good, else (bundle or None, reasons). Never raises."""
    bundle, why = parse(raw)
    if why:
        return None, [why]
    if not isinstance(bundle, dict) or bundle.get("format") not in FORMATS_READ:
        return None, [f"malformed: not a ckalab result bundle (format '{FORMAT}' expected)"]
    if not signature_ok(bundle, key):
        return bundle, ["bad signature (edited after signing, or signed with another course key)"]
    if not isinstance(bundle.get("student"), str) or not grading.printable(bundle["student"], oneline=True).strip():
        return bundle, ["malformed: no student id"]
    if len(bundle["student"]) > MAX_STUDENT_ID:
        return bundle, [f"malformed: student id longer than {MAX_STUDENT_ID} characters"]
    if not isinstance(bundle.get("labs"), list):
        return bundle, ["malformed: 'labs' is not a list"]
    reasons = []
    ids = [e.get("lab") for e in bundle["labs"] if isinstance(e, dict)]
    if len(ids) != len(set(map(str, ids))):
        reasons.append("malformed: a lab is listed twice")
    for entry in bundle["labs"]:
        try:
            reasons += _problems_in_lab(entry, cat, bundle, seeds)
        except Exception as exc:  # noqa: BLE001 - whatever is inside, the gradebook carries on
            reasons.append(f"malformed lab entry ({type(exc).__name__}: {grading.printable(str(exc), oneline=True)[:80]})")
    return bundle, reasons


def display_name(path: Path) -> str:
    """A file name fit for a report: bytes that are not UTF-8 shown as \\xNN, controls dropped."""
    raw = os.fsencode(path.name)
    return grading.printable(raw.decode("utf-8", "backslashreplace"), oneline=True)


@dataclass
class Candidate:
    """One submission of a lab by a student: where it came from and on which backend."""
    source: str
    entry: dict
    backend: str = ""
    order: int = 0   # arrival, the last tie-breaker


@dataclass
class Gradebook:
    lab_ids: list[str]
    rows: dict[str, dict[str, dict]] = field(default_factory=dict)  # student -> lab -> kept entry
    rejected: list[tuple[str, str]] = field(default_factory=list)    # (file, reason)
    files: list[Path] = field(default_factory=list)
    rule: str = "flag"        # for duplicates: flag (keep the newest, list both), newest, best
    candidates: dict[tuple[str, str], list[Candidate]] = field(default_factory=dict)

    def add(self, student: str, entry: dict, source: str = "", backend: str = "") -> None:
        """Record a lab result; when the student already has one for that lab, keep one by the rule."""
        cands = self.candidates.setdefault((student, entry["lab"]), [])
        cands.append(Candidate(source, entry, backend, len(cands)))
        self.rows.setdefault(student, {})[entry["lab"]] = self.kept(student, entry["lab"]).entry

    def kept(self, student: str, lab_id: str) -> Candidate:
        def newest(c):
            return (c.entry.get("graded_at") or 0, c.order)

        def best(c):
            e = c.entry
            return (e["score"] / e["max_score"] if e["max_score"] else 0, *newest(c))

        return max(self.candidates[(student, lab_id)], key=best if self.rule == "best" else newest)

    def duplicates(self) -> list[tuple[str, str, list[Candidate], Candidate]]:
        return [(s, lab, cands, self.kept(s, lab)) for (s, lab), cands in sorted(self.candidates.items())
                if len(cands) > 1]

    def flagged(self) -> bool:
        return self.rule == "flag" and bool(self.duplicates())

    def backend_of(self, student: str, lab_id: str) -> str:
        return self.kept(student, lab_id).backend if (student, lab_id) in self.candidates else ""

    def max_of(self, lab_id: str, cat: Catalogue | None = None) -> int:
        """The lab's full maximum (every check available); a student's own is per backend."""
        cat = cat or Catalogue()
        return cat.full_max(lab_id) if cat.known(lab_id) else 0

    def unavailable(self, student: str) -> list[tuple[str, dict]]:
        """(lab, check) for each check the student's backend could not run, in kept entries."""
        return [(lab_id, c) for lab_id, e in sorted(self.rows.get(student, {}).items())
                for c in e["checks"] if c.get("state") == grading.UNAVAILABLE]

    def duplicate_note(self, cands: list[Candidate], kept: Candidate) -> str:
        def one(c):
            e = c.entry
            return f"{c.source or '?'} ({e['score']}/{e['max_score']})"
        how = {"flag": "newest; flagged: choose with --duplicates newest|best", "newest": "newest",
               "best": "best"}[self.rule]
        return f"{', '.join(one(c) for c in cands)}; kept {kept.source or '?'} ({how})"


def cell(value):
    """A CSV cell: numbers as they are; text made printable on one line and, when a spreadsheet
    would read it as a formula (= + - @, or a leading tab or CR), prefixed with a quote."""
    if _is_num(value):
        return value
    text = grading.printable(value, oneline=True)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") or str(value)[:1] in ("\t", "\r") else text


def handed_in(book: Gradebook) -> list[str]:
    """The book's labs that at least one student handed in, in catalogue order."""
    got = {lab for r in book.rows.values() for lab in r}
    return [lab for lab in book.lab_ids if lab in got]


def check_columns(book: Gradebook, cat: Catalogue) -> list[tuple[str, str, int]]:
    """(lab, check id, points) for every check of the labs handed in, in grader order (a column
    per check of every lab would bury the few that matter)."""
    return [(lab, cid, pts) for lab in handed_in(book) if cat.known(lab) for cid, pts in cat.checks(lab).items()]


def check_cells(row: dict, checks: list[tuple[str, str, int]]) -> list:
    """A student's points per check: blank when the lab was not handed in, 'n/a' when the
    backend could not run the check."""
    out = []
    for lab, cid, _ in checks:
        c = next((c for c in (row.get(lab) or {}).get("checks", []) if c["id"] == cid), None)
        out.append("" if c is None else "n/a" if c.get("state") == grading.UNAVAILABLE else c["points"])
    return out


def write(book: Gradebook, out_dir: Path, cat: Catalogue | None = None, per_check: bool = False) -> list[Path]:
    """gradebook.csv (a row per student, a column per lab, totals) and gradebook.xml (JUnit).
    A student's maximum counts, per lab, the checks their backend could run (or the lab's full
    maximum when nothing was submitted for it); `not_available` names the checks left out.
    `per_check` appends a column per check ("lab/check"), after the usual ones so readers of
    the usual layout are not disturbed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    cat = cat or Catalogue()
    full = {i: book.max_of(i, cat) for i in book.lab_ids}
    csv_path = out_dir / "gradebook.csv"
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        wr = csv.writer(f)
        checks = check_columns(book, cat) if per_check else []
        wr.writerow(["student", *book.lab_ids, "total", "max", "percent", "labs_passed", "backend",
                     "not_available", "duplicates", *[f"{lab}/{c}" for lab, c, _ in checks]])
        wr.writerow(["(max)", *[full[i] for i in book.lab_ids], sum(full.values()), sum(full.values()), 100,
                     len(book.lab_ids), "", "", "", *[pts for _, _, pts in checks]])
        for student in sorted(book.rows):
            r = book.rows[student]
            total = sum(r[i]["score"] for i in book.lab_ids if i in r)
            mx = sum(r[i]["max_score"] if i in r else full[i] for i in book.lab_ids)
            backends = sorted({book.backend_of(student, i) for i in r} - {""})
            dups = [f"{lab}: {book.duplicate_note(c, k)}" for s, lab, c, k in book.duplicates() if s == student]
            wr.writerow([cell(x) for x in (
                student, *[r[i]["score"] if i in r else "" for i in book.lab_ids], total, mx,
                round(100 * total / mx, 1) if mx else 0, sum(1 for i in book.lab_ids if i in r and r[i]["passed"]),
                " ".join(backends), "; ".join(f"{lab}/{c['id']}" for lab, c in book.unavailable(student)),
                " | ".join(dups), *check_cells(r, checks))])
    xml_path = out_dir / "gradebook.xml"
    xml_path.write_text(render.gradebook_junit(book), encoding="utf-8")
    book.files = [csv_path, xml_path]
    return book.files


def read_capped(path: Path) -> bytes:
    """At most MAX_BUNDLE_BYTES + 1 bytes: enough to tell an oversized file without reading it all."""
    with open(path, "rb") as f:
        return f.read(MAX_BUNDLE_BYTES + 1)


def gradebook(directory: str | Path, key_file: str | Path | None, out_dir: str | Path | None = None,
              lab_ids: list[str] | None = None, duplicates: str = "flag", seeds: str = "any",
              per_check: bool = False) -> Gradebook:
    """Verify every *.json bundle in `directory` and write the gradebook (default: into it).
    `duplicates` picks the result kept when a student submitted a lab more than once (flag:
    the newest, and the gradebook lists both); `seeds="student"` requires each lab's seed to be
    the student's id."""
    if duplicates not in DUPLICATE_RULES:
        raise CkalabError(f"--duplicates must be one of {', '.join(DUPLICATE_RULES)}.")
    if seeds not in SEED_RULES:
        raise CkalabError(f"--seeds must be one of {', '.join(SEED_RULES)}.")
    key = read_key(key_file)
    d = Path(directory)
    if not d.is_dir():
        raise CkalabError(f"{d} is not a directory of result bundles.")
    cat = Catalogue()
    book = Gradebook(lab_ids or labs.lab_ids(), rule=duplicates)
    for path in sorted(d.glob("*.json")):
        if path.name.startswith("gradebook"):
            continue
        name = display_name(path)
        try:
            if not path.is_file():
                raise IsADirectoryError(0, "not a file")
            bundle, reasons = verify(read_capped(path), key, cat, seeds)
            if not reasons:
                student = grading.printable(bundle["student"], oneline=True).strip()
                for entry in bundle["labs"]:
                    book.add(student, entry, name, str(bundle.get("backend") or ""))
        except IsADirectoryError:
            reasons = ["malformed: not a file"]
        except OSError as exc:
            reasons = [f"unreadable ({exc.strerror or type(exc).__name__})"]
        except Exception as exc:  # noqa: BLE001 - one bad bundle never stops the class's gradebook
            reasons = [f"could not be graded ({type(exc).__name__}: {grading.printable(str(exc), oneline=True)[:80]})"]
        if reasons:
            book.rejected.append((name, "; ".join(reasons)))
    write(book, Path(out_dir) if out_dir else d, cat, per_check)
    return book
