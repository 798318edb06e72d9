"""Result bundles (the learner's machine grades, the result travels) and the instructor's gradebook.

`submit` grades the labs the learner worked on, where the cluster is, and writes a JSON bundle:
student, per-lab seed and parameters, per-check results, times, ckalab version and the sha256 of
the lab files and grader used (Lab.files_digest). The bundle is signed with HMAC-SHA256 under the
course key the instructor hands out.

`gradebook` verifies every bundle against the instructor's own copy of the labs: signature,
digests (an edited grader or lab is detected), parameters recomputed from the seed, and the check
list and points of the instructor's grader (a hand-edited score is detected even by someone who
holds the key). It never raises on a bad file: every rejected bundle is listed with its reason.

The key is shared by the whole class, so the signature proves "made with the course key", not
"made by this student": it stops casual edits, not a determined student with the key.
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import importlib.util
import json
import os
import secrets
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from . import __version__, grading, home, labs
from .errors import CkalabError

FORMAT = "ckalab-result/v1"
MAX_BUNDLE_BYTES = 2_000_000
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
    for marker in sorted(root.glob("*/.ckalab-lab.json")) if root.is_dir() else []:
        try:
            rec = json.loads(marker.read_text())
            if rec["lab"] == marker.parent.name:  # not a copy set aside (e.g. before an exam)
                out[str(rec["lab"])] = rec.get("seed")
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def lab_entry(lab: labs.Lab, result: grading.GradeResult, started_at: float | None = None,
              digest: str | None = None) -> dict:
    return {"lab": lab.id, "seed": lab.seed, "params": lab.params, "digest": digest or lab.files_digest(),
            "started_at": started_at, "graded_at": round(time.time(), 3), "duration_s": result.duration_s,
            "score": result.score, "max_score": result.max_score, "passed": result.passed,
            "checks": [{"id": c.id, "title": c.title, "passed": c.passed, "points": c.points,
                        "max_points": c.max_points, "message": c.message} for c in result.checks]}


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
    entries = []
    for lab_id in ids:
        lab = labs.load(lab_id, seed if seed is not None else started.get(lab_id))
        marker = lab.workdir / ".ckalab-lab.json"
        t0 = marker.stat().st_mtime if marker.exists() else None
        entries.append(lab_entry(lab, grading.run(lab, cluster), t0))
    bundle = make_bundle(student, entries, key, {"backend": getattr(cluster, "backend", "?")})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(bundle, indent=2) + "\n")
    return bundle


# --- gradebook (the instructor's machine) ----------------------------------------------------

@dataclass
class Catalogue:
    """The instructor's own copy of the labs: digests, and each grader's checks and points."""
    _digest: dict = field(default_factory=dict)
    _checks: dict = field(default_factory=dict)

    def known(self, lab_id: str) -> bool:
        return lab_id in labs.lab_ids()

    def digest(self, lab_id: str) -> str:
        if lab_id not in self._digest:
            self._digest[lab_id] = labs.load(lab_id).files_digest()
        return self._digest[lab_id]

    def checks(self, lab_id: str) -> dict[str, int]:
        """check id -> points, read from the grader's @check decorators (trusted instructor code)."""
        if lab_id not in self._checks:
            path = labs.graders_root() / f"{lab_id}.py"
            spec = importlib.util.spec_from_file_location(f"ckalab_gradebook_{lab_id.replace('-', '_')}", path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mod  # dataclasses and the like look their module up there
            spec.loader.exec_module(mod)
            self._checks[lab_id] = {name: fn._ckalab_check.points for name, fn in vars(mod).items()
                                    if callable(fn) and hasattr(fn, "_ckalab_check")}
        return self._checks[lab_id]


def _problems_in_lab(entry, cat: Catalogue) -> list[str]:
    if not isinstance(entry, dict) or not isinstance(entry.get("lab"), str):
        return ["malformed: a lab entry is not an object with a 'lab' id"]
    lab_id = entry["lab"]
    if not cat.known(lab_id):
        return [f"unknown lab '{lab_id}'"]
    out = []
    if entry.get("digest") != cat.digest(lab_id):
        out.append(f"grader hash mismatch for '{lab_id}' (the lab or grader files differ from the course's; "
                   "update ckalab and submit again)")
    seed = entry.get("seed")
    if seed is not None and not isinstance(seed, str):
        out.append(f"malformed: seed of '{lab_id}' is not a string")
    elif entry.get("params") != labs.load(lab_id, seed).params:
        out.append(f"parameters of '{lab_id}' do not match its seed")
    checks = entry.get("checks")
    if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
        return out + [f"malformed: checks of '{lab_id}' are not a list of objects"]
    expected = cat.checks(lab_id)
    got = {c.get("id"): c for c in checks}
    if set(got) != set(expected) or any(c.get("max_points") != expected[i] for i, c in got.items()):
        out.append(f"checks of '{lab_id}' do not match the course grader")
    elif any(c.get("points") not in (0, c["max_points"]) or bool(c.get("passed")) != (c.get("points") == c["max_points"])
             for c in checks) or entry.get("score") != sum(c["points"] for c in checks) \
            or entry.get("max_score") != sum(expected.values()) \
            or bool(entry.get("passed")) != all(c.get("passed") for c in checks):
        out.append(f"score of '{lab_id}' does not add up from its checks")
    return out


def verify(raw: bytes, key: bytes, cat: Catalogue) -> tuple[dict | None, list[str]]:
    """(bundle, []) when it is good, else (bundle or None, reasons). Never raises."""
    try:
        if len(raw) > MAX_BUNDLE_BYTES:
            return None, [f"malformed: larger than {MAX_BUNDLE_BYTES} bytes"]
        bundle = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return None, [f"malformed JSON ({type(exc).__name__}: {str(exc)[:80]})"]
    if not isinstance(bundle, dict) or bundle.get("format") != FORMAT:
        return None, [f"malformed: not a ckalab result bundle (format '{FORMAT}' expected)"]
    if not signature_ok(bundle, key):
        return bundle, ["bad signature (edited after signing, or signed with another course key)"]
    if not isinstance(bundle.get("student"), str) or not bundle["student"].strip():
        return bundle, ["malformed: no student id"]
    if not isinstance(bundle.get("labs"), list):
        return bundle, ["malformed: 'labs' is not a list"]
    reasons = []
    for entry in bundle["labs"]:
        try:
            reasons += _problems_in_lab(entry, cat)
        except Exception as exc:  # noqa: BLE001 - whatever is inside, the gradebook carries on
            reasons.append(f"malformed lab entry ({type(exc).__name__}: {str(exc)[:80]})")
    return bundle, reasons


@dataclass
class Gradebook:
    lab_ids: list[str]
    rows: dict[str, dict[str, dict]] = field(default_factory=dict)  # student -> lab -> entry
    rejected: list[tuple[str, str]] = field(default_factory=list)    # (file, reason)
    files: list[Path] = field(default_factory=list)

    def add(self, student: str, entry: dict) -> None:
        """Keep the most recently graded result per student and lab."""
        old = self.rows.setdefault(student, {}).get(entry["lab"])
        if old is None or (entry.get("graded_at") or 0) >= (old.get("graded_at") or 0):
            self.rows[student][entry["lab"]] = entry

    def max_of(self, lab_id: str, cat: Catalogue | None = None) -> int:
        for r in self.rows.values():
            if lab_id in r:
                return r[lab_id]["max_score"]
        return sum(cat.checks(lab_id).values()) if cat else 0

    def render(self) -> str:
        lines = [f"{len(self.rows)} students, {len(self.lab_ids)} labs, {len(self.rejected)} rejected bundles"]
        lines += [f"  rejected {f}: {why}" for f, why in self.rejected]
        lines += [f"  wrote {p}" for p in self.files]
        return "\n".join(lines)


def write(book: Gradebook, out_dir: Path, cat: Catalogue | None = None) -> list[Path]:
    """gradebook.csv (a row per student, a column per lab, totals) and gradebook.xml (JUnit)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    maxes = {i: book.max_of(i, cat) for i in book.lab_ids}
    max_total = sum(maxes.values())
    csv_path = out_dir / "gradebook.csv"
    with open(csv_path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["student", *book.lab_ids, "total", "max", "percent", "labs_passed"])
        wr.writerow(["(max)", *[maxes[i] for i in book.lab_ids], max_total, max_total, 100, len(book.lab_ids)])
        for student in sorted(book.rows):
            r = book.rows[student]
            total = sum(e["score"] for e in r.values() if e["lab"] in maxes)
            wr.writerow([student, *[r[i]["score"] if i in r else "" for i in book.lab_ids], total, max_total,
                         round(100 * total / max_total, 1) if max_total else 0,
                         sum(1 for i in book.lab_ids if i in r and r[i]["passed"])])
    root = ET.Element("testsuites", name="ckalab gradebook")
    for student in sorted(book.rows):
        r = book.rows[student]
        suite = ET.SubElement(root, "testsuite", name=student, tests=str(len(book.lab_ids)),
                              failures=str(sum(1 for i in book.lab_ids if i in r and not r[i]["passed"])),
                              skipped=str(sum(1 for i in book.lab_ids if i not in r)))
        for lab_id in book.lab_ids:
            case = ET.SubElement(suite, "testcase", classname=student, name=lab_id,
                                 time=str((r.get(lab_id) or {}).get("duration_s") or 0))
            e = r.get(lab_id)
            if e is None:
                ET.SubElement(case, "skipped", message="not submitted")
            elif not e["passed"]:
                failed = [c for c in e["checks"] if not c["passed"]]
                ET.SubElement(case, "failure", message=f"{e['score']}/{e['max_score']} points").text = \
                    "\n".join(f"{c['title']}: {c['message']}" for c in failed)
    if book.rejected:
        suite = ET.SubElement(root, "testsuite", name="rejected bundles", tests=str(len(book.rejected)),
                              errors=str(len(book.rejected)))
        for name, why in book.rejected:
            ET.SubElement(ET.SubElement(suite, "testcase", classname="rejected", name=name), "error",
                          message=why[:200]).text = why
    ET.indent(root)
    xml_path = out_dir / "gradebook.xml"
    xml_path.write_text(ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n")
    book.files = [csv_path, xml_path]
    return book.files


def gradebook(directory: str | Path, key_file: str | Path | None, out_dir: str | Path | None = None,
              lab_ids: list[str] | None = None) -> Gradebook:
    """Verify every *.json bundle in `directory` and write the gradebook (default: into it)."""
    key = read_key(key_file)
    d = Path(directory)
    if not d.is_dir():
        raise CkalabError(f"{d} is not a directory of result bundles.")
    cat = Catalogue()
    book = Gradebook(lab_ids or labs.lab_ids())
    for path in sorted(d.glob("*.json")):
        if path.name.startswith("gradebook"):
            continue
        try:
            raw = path.read_bytes() if path.is_file() else b""
            bundle, reasons = verify(raw, key, cat) if path.is_file() else (None, ["malformed: not a file"])
        except OSError as exc:
            bundle, reasons = None, [f"unreadable ({exc.strerror})"]
        if reasons:
            book.rejected.append((path.name, "; ".join(reasons)))
            continue
        for entry in bundle["labs"]:
            book.add(bundle["student"].strip(), entry)
    write(book, Path(out_dir) if out_dir else d, cat)
    return book


def cli_gradebook(directory, key_file, out_dir=None) -> int:
    book = gradebook(directory, key_file, out_dir)
    print(book.render())
    return 1 if book.rejected else 0


def cli_submit(student, cluster, out, key_file=None, lab_ids=None, seed=None) -> int:
    b = submit(student, cluster, out, key_file, lab_ids, seed)
    for e in b["labs"]:
        print(f"  {e['lab']:<22} {e['score']:>3}/{e['max_score']:<3} {'passed' if e['passed'] else 'not passed'}")
    print(f"Wrote {out} for {b['student']} ({len(b['labs'])} labs, signed). Hand this file in.")
    return 0
