"""The gradebook in the formats learning-management systems import.

`ckalab gradebook --canvas/--canvas-template/--moodle` writes, next to gradebook.csv, a
canvas.csv for Canvas's Gradebook import (filled into the instructor's own Canvas export when
one is given) and a moodle.csv for Moodle's "Import grades from CSV"; `ckalab gradescope-verify`
runs inside a Gradescope autograder, verifies the one bundle a student uploaded and writes
Gradescope's results.json. Bundles, their verification and the gradebook itself belong to
`results`; this module only imports it (results never imports this one), so a verb that does
not export never loads it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from . import grading, labs
from .errors import CkalabError
from .results import (Catalogue, Gradebook, cell, check_cells, check_columns, gradebook, handed_in, read_capped,
                      read_key, verify)


# --- Canvas and Moodle: CSV files of the gradebook ------------------------------------------
#
# Canvas. What its gradebook export looks like, and so what its import reads back: the columns
# Student, ID, SIS User ID, SIS Login ID, Section, then one column per assignment titled
# "<name> (<assignment id>)", with a second row "Points Possible"; a student is matched by one of
# the first columns, read-only columns are ignored, and a column without an id becomes a new
# assignment (Ohio State's guide to importing a CSV into CarmenCanvas lists the required columns,
# https://teaching.resources.osu.edu/toolsets/carmencanvas/guides/calculating-final-grades/
# import-csv-file-carmen-grades ; VCU's notes on the Gradebook export describe the read-only
# columns, https://ts.vcu.edu/askit/teaching-and-learning/canvas/faculty/grading-faculty/
# gradebook-action-menu-faculty/). So the safe route is the instructor's own export as template:
# its ids are real, and only the lab columns are written back.

CANVAS_ID_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
CANVAS_ASSIGNMENT = re.compile(r"^(?P<title>.*\S)\s*\((?P<id>\d+)\)\s*$")
MOODLE_IDS = ("username", "email", "idnumber")


@dataclass
class CanvasTemplate:
    path: Path
    header: list[str]
    points_row: list[str] | None
    rows: list[list[str]]


def read_canvas_template(path: str | Path) -> CanvasTemplate:
    """An exported Canvas gradebook. Raises CkalabError (what is wrong with the file) on bad input."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CkalabError(f"Cannot read the Canvas export {p}: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        rows = [r for r in csv.reader(io.StringIO(text)) if any(x.strip() for x in r)]
    except csv.Error as exc:
        raise CkalabError(f"{p} is not a readable CSV file ({exc}).") from None
    if not rows or rows[0][:1] != ["Student"] or not {"ID", "SIS Login ID"} & set(rows[0]):
        raise CkalabError(f"{p} does not look like a Canvas gradebook export: its first row should start with "
                          f"Student, ID, SIS User ID, SIS Login ID, Section (Grades > Export in Canvas).")
    header, body, points = rows[0], [], None
    for r in rows[1:]:
        first = r[0].strip() if r else ""
        if first.startswith("Points Possible"):
            points = r
        elif first and not first.startswith("Student, Test"):   # Canvas's own test student is no one
            body.append(r + [""] * (len(header) - len(r)))
    return CanvasTemplate(p, header, points, body)


def _canvas_lab_columns(header: list[str], lab_ids: list[str]) -> dict[str, int]:
    """lab id -> column index: an assignment column whose name contains the lab id or equals the
    lab's title (case and spacing ignored)."""
    def norm(t):
        return " ".join(t.lower().split())
    out = {}
    for i, h in enumerate(header):
        m = CANVAS_ASSIGNMENT.match(h)
        if not m:
            continue
        name = norm(m["title"])
        for lab in lab_ids:
            if lab not in out and (re.search(rf"(?<![\w-]){re.escape(lab)}(?![\w-])", name)
                                   or name == norm(labs.load(lab).title)):
                out[lab] = i
                break
    return out


def write_canvas(book: Gradebook, path: Path, template: CanvasTemplate | str | Path | None = None) -> list[str]:
    """canvas.csv for Canvas's Gradebook import; returns notes for the instructor (labs without a
    column, students without a row). With a template (the instructor's export) its rows and
    assignment ids are kept, students are matched by SIS Login ID, then SIS User ID, then ID, and
    only the matching lab columns are written; without one, a minimal file whose lab columns
    Canvas offers to create as new assignments."""
    cat = Catalogue()
    full = {i: book.max_of(i, cat) for i in book.lab_ids}
    notes: list[str] = []
    if template is not None and not isinstance(template, CanvasTemplate):
        template = read_canvas_template(template)
    if template is None:
        header = [*CANVAS_ID_COLUMNS, *[f"ckalab {lab}" for lab in book.lab_ids]]
        table = [["Points Possible", "", "", "", "", *[full[i] for i in book.lab_ids]]]
        table += [[cell(s), "", "", cell(s), "", *[r[i]["score"] if i in r else "" for i in book.lab_ids]]
                  for s, r in sorted(book.rows.items())]
    else:
        cols = _canvas_lab_columns(template.header, book.lab_ids)
        notes += [f"no assignment column for {lab} (name a Canvas assignment after the lab id, e.g. '{lab}')"
                  for lab in handed_in(book) if lab not in cols]
        keep = [i for i, h in enumerate(template.header) if h in CANVAS_ID_COLUMNS]
        labs_here = sorted(cols, key=cols.get)
        header = [template.header[i] for i in keep] + [template.header[cols[lab]] for lab in labs_here]
        pts = template.points_row or ["Points Possible"]
        table = [[pts[i] if i < len(pts) else "" for i in keep] + [full[lab] for lab in labs_here]]
        by_id: dict[str, str] = {s.strip().casefold(): s for s in book.rows}
        matched = set()
        for r in template.rows:
            student = next((by_id[k] for k in (r[template.header.index(c)].strip().casefold()
                                                 for c in ("SIS Login ID", "SIS User ID", "ID")
                                                 if c in template.header) if k and k in by_id), None)
            scores = book.rows.get(student, {})
            matched.add(student)
            table.append([r[i] for i in keep] + [scores[lab]["score"] if lab in scores else "" for lab in labs_here])
        notes += [f"student {s} is not in {template.path.name} (no row with that SIS Login ID, SIS User ID or ID)"
                  for s in sorted(book.rows) if s not in matched]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *[[cell(x) if x != "" else "" for x in row] for row in table]])
    return notes


def write_moodle(book: Gradebook, path: Path, id_column: str = "username", per_check: bool = False) -> Path:
    """moodle.csv for Moodle's "Import grades from CSV": one identifier column (the student id as
    the username, email or ID number, as the course's users are known) and one column per lab
    handed in by anyone, each mapped to a grade item on import (or created as a new one); a
    student's lab not handed in is blank (Moodle leaves that grade alone)."""
    if id_column not in MOODLE_IDS:
        raise CkalabError(f"--moodle-id must be one of {', '.join(MOODLE_IDS)}.")
    cat = Catalogue()
    checks = check_columns(book, cat) if per_check else []
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        wr = csv.writer(f)
        items = handed_in(book)   # a column with no grade in it would only be one more to map
        wr.writerow([id_column, *items, *[f"{lab}/{c}" for lab, c, _ in checks]])
        for s, r in sorted(book.rows.items()):
            wr.writerow([cell(x) if x != "" else "" for x in (
                s, *[r[i]["score"] if i in r else "" for i in items], *check_cells(r, checks))])
    return path


# --- Gradescope: an autograder that verifies an uploaded bundle ------------------------------
#
# The autograder writes /autograder/results/results.json: a top-level score and output, and a
# list of tests, each with name, number, score, max_score, status ("passed" or "failed"),
# output and visibility ("visible", "hidden", "after_due_date", "after_published"); see
# https://gradescope-autograders.readthedocs.io/en/latest/specs/ . One test per check, so the
# learner sees the same messages as `ckalab check`.

def gradescope_results(raw: bytes, key: bytes, lab_ids: list[str] | None = None, seeds: str = "any",
                       expected_students: list[str] | None = None, visibility: str = "visible") -> dict:
    """results.json for one bundle: its checks when it verifies, else score 0 and the reasons.
    `expected_students` (from Gradescope's submission metadata) must include the bundle's student."""
    cat = Catalogue()
    bundle, reasons = verify(raw, key, cat, seeds)
    if not reasons and expected_students:
        who = grading.printable(bundle["student"], oneline=True).strip()
        known = {x.strip().casefold() for x in expected_students if x}
        if who.casefold() not in known and who.casefold() not in {k.split("@")[0] for k in known}:
            reasons = [f"the bundle is for student '{who[:60]}', not the submitter "
                       f"({', '.join(sorted(known))[:120]})"]
    if reasons:
        return {"score": 0, "output": "The result bundle was not accepted:\n" + "\n".join(f"- {r}" for r in reasons)
                + "\nRun 'ckalab submit' again and upload the new file.", "visibility": visibility,
                "stdout_visibility": "hidden",
                "tests": [{"name": "Result bundle verifies", "number": "0", "score": 0, "max_score": 0,
                           "status": "failed", "output": "; ".join(reasons), "visibility": visibility}]}
    entries = {e["lab"]: e for e in bundle["labs"]}
    wanted = lab_ids or [i for i in labs.lab_ids() if i in entries]
    tests, score, lines = [], 0, []
    for n, lab in enumerate(wanted, 1):
        e = entries.get(lab)
        if e is None:
            mx = cat.full_max(lab) if cat.known(lab) else 0
            tests.append({"name": f"{lab}: handed in", "number": f"{n}", "score": 0, "max_score": mx,
                          "status": "failed", "output": f"The bundle has no result for {lab}: start it with "
                          f"'ckalab start {lab}', then submit again.", "visibility": visibility})
            lines.append(f"{lab}: not in the bundle")
            continue
        score += e["score"]
        lines.append(f"{lab}: {e['score']}/{e['max_score']}")
        for k, c in enumerate(e["checks"], 1):
            t = {"name": f"{lab}: {grading.printable(c['title'], oneline=True)}", "number": f"{n}.{k}",
                 "score": c["points"], "max_score": c["max_points"],
                 "output": grading.printable(c.get("message") or ""), "visibility": visibility}
            if c.get("state") == grading.UNAVAILABLE:
                # Neither passed nor failed: Gradescope shows a 0/0 test without a status as is.
                t["output"] = f"{grading.UNAVAILABLE_TEXT} ({bundle.get('backend')}): {t['output']}".strip()
            else:
                t["status"] = "passed" if c.get("state") == grading.PASSED else "failed"
            tests.append(t)
    who = grading.printable(bundle["student"], oneline=True)
    return {"score": score, "output": f"Verified result bundle of {who} (backend {bundle.get('backend')}):\n"
            + "\n".join(lines), "visibility": visibility, "stdout_visibility": "hidden", "tests": tests}


def _submission_file(path: Path) -> Path:
    """The bundle itself, or the one *.json file in a submission directory."""
    if not path.is_dir():
        return path
    found = sorted(p for p in path.rglob("*.json") if p.is_file())
    if len(found) != 1:
        raise CkalabError(f"{path} holds {len(found)} .json files; upload exactly one result bundle.")
    return found[0]


def _metadata_students(path: str | Path | None) -> list[str]:
    """Submitters' ids from Gradescope's submission_metadata.json (users: email, sid, name)."""
    if not path:
        return []
    try:
        meta = json.loads(Path(path).read_text())
        return [str(u.get(k)) for u in meta.get("users", []) for k in ("sid", "email") if u.get(k)]
    except (OSError, ValueError, AttributeError) as exc:
        raise CkalabError(f"Cannot read the submission metadata {path}: {exc}") from None


def gradescope_verify(bundle, key_file, out, lab_ids=None, seeds="any", metadata=None) -> tuple[dict, Path, str]:
    """Verify one uploaded bundle (a file, or a submission folder holding one) and write
    Gradescope's results.json to `out`. Returns the results, the file written and, when the
    bundle could not be read at all, why (the results then say it was not accepted)."""
    key = read_key(key_file)
    src = _submission_file(Path(bundle))
    try:
        raw, unread = read_capped(src), ""
    except OSError as exc:
        raw, unread = b"", f"Cannot read {src}: {exc.strerror}"
    res = gradescope_results(raw, key, lab_ids, seeds, _metadata_students(metadata))
    outp = Path(out)
    outp.parent.mkdir(parents=True, exist_ok=True)
    outp.write_text(json.dumps(res, indent=2) + "\n")
    return res, outp, unread


def bundle_verified(res: dict) -> bool:
    """Whether Gradescope results hold the bundle's checks (not only the one failed verification)."""
    return bool(res["tests"]) and res["tests"][0]["name"] != "Result bundle verifies"


def gradebook_and_exports(directory, key_file, out_dir=None, duplicates="flag", seeds="any", per_check=False,
                          canvas=False, canvas_template=None, moodle=None) -> tuple[Gradebook, list[str]]:
    """`ckalab gradebook`: the gradebook, then the Canvas and Moodle files asked for (listed in
    book.files); returns the book and notes for the instructor (Canvas columns or rows not found)."""
    out = Path(out_dir or directory)
    if canvas_template:   # read before grading: a wrong template is found before any work is done
        canvas_template = read_canvas_template(canvas_template)
    book = gradebook(directory, key_file, out_dir, duplicates=duplicates, seeds=seeds, per_check=per_check)
    notes = []
    if canvas or canvas_template:
        notes += write_canvas(book, out / "canvas.csv", canvas_template)
        book.files.append(out / "canvas.csv")
    if moodle:
        write_moodle(book, out / "moodle.csv", moodle, per_check)
        book.files.append(out / "moodle.csv")
    return book, notes
