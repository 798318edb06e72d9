"""Every way a result is shown: text for a terminal, HTML for a notebook, JUnit XML for CI.

One module so that a check looks the same wherever it appears (`ckalab check`, the lab bar,
the exam report, the gradebook) and a change of look is made once: the marks and colours of
the three check states are defined here and nowhere else.

It reads the shapes of ckalab.grading (GradeResult, CheckResult; stored records are read back
with their from_dict) and plain report dicts; it never imports the modules that produce them
(exam, results, classroom), which call it instead. Its functions return strings and print
nothing. Everything a learner or a student controls (check messages echo object names, bundles
carry student ids) goes through grading.printable() here, and through html.escape() as well
for HTML.
"""

from __future__ import annotations

import html
import time
from datetime import datetime, timezone

from .grading import FAILED, PASSED, UNAVAILABLE, UNAVAILABLE_TEXT, CheckResult, GradeResult, printable

MARKS = {PASSED: "✔", FAILED: "✘", UNAVAILABLE: "–"}
COLOURS = {PASSED: "#1a7f37", FAILED: "#cf222e", UNAVAILABLE: "#57606a"}
PARTIAL = "#b35900"   # a lab not passed yet: orange, the red is for the checks that failed
MUTED = COLOURS[UNAVAILABLE]
MESSAGE_COLOURS = {"info": "#0969da", "error": COLOURS[FAILED], "ok": COLOURS[PASSED], "warn": PARTIAL}
# A cell of the class view (dashboard.cell_of): one student's lab, as a whole.
CELL_STATES = ("passed", "failed", "not-started", "unavailable")
CELL_TEXT = {"passed": "all checks passed", "failed": "some checks failed", "not-started": "not started",
             "unavailable": "not available"}
CELL_COLOURS = {"passed": COLOURS[PASSED], "failed": "#f9a825", "not-started": "#9e9e9e", "unavailable": "#5c6bc0"}


def clock(seconds: float) -> str:
    """h:mm:ss, never negative (time left after the deadline is 0:00:00)."""
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _bool(value: bool) -> str:
    return str(bool(value)).lower()


def _esc(text) -> str:
    return html.escape(printable(text))


# --- one lab result ---------------------------------------------------------------------------

def check_line(c: CheckResult) -> str:
    """A check on one line: its mark, points and title."""
    if c.state == UNAVAILABLE:
        return f"{MARKS[UNAVAILABLE]} [-] {c.title}: {UNAVAILABLE_TEXT}"
    return f"{MARKS.get(c.state, MARKS[FAILED])} [{c.points}/{c.max_points}] {c.title}"


def _headline(r: GradeResult, failed_words: str) -> str:
    counted = len(r.checks) - len(r.unavailable())
    head = "all checks passed" if r.passed else f"{len(r.failed())} of {counted} checks {failed_words}"
    if r.unavailable():
        head += f", {len(r.unavailable())} {UNAVAILABLE_TEXT}"
    return head


def result_text(r: GradeResult) -> str:
    """`ckalab check`: a score line, then every check; a check not passed with its message and,
    when failed, its hint."""
    lines = [f"{r.lab}: {r.score}/{r.max_score} points, {_headline(r, 'failed')} ({r.duration_s:.2f}s)"]
    for c in r.checks:
        lines.append(f"  {check_line(c)}")
        if c.state != PASSED:
            lines += [f"      {line}" for line in c.message.splitlines()]
            if c.hint and c.state == FAILED:
                lines.append(f"      hint: {c.hint}")
    return printable("\n".join(lines))


def result_html(r: GradeResult) -> str:
    """The lab bar's Check: a score line, then one row per check."""
    head = _headline(r, "not passed yet")
    head = head[:1].upper() + head[1:]
    return (f'<div class="ckalab-result" data-passed="{_bool(r.passed)}">'
            f'<div style="font-weight:bold;color:{COLOURS[PASSED] if r.passed else PARTIAL}">'
            f'Score {r.score}/{r.max_score}: {head}'
            f' <span style="color:{MUTED};font-weight:normal">({r.duration_s:.2f}s)</span></div>'
            f'{checks_html(r.checks)}</div>')


def checks_html(checks: list[CheckResult]) -> str:
    """One row per check: its mark in its colour, the title, for a failed check its message and
    hint (the reason for an unavailable one), and the points. The lab bar and the exam report share it."""
    rows = []
    for c in checks:
        mark = f'<span style="color:{COLOURS[c.state]}">{MARKS[c.state]}</span>'
        detail = ""
        if c.state == UNAVAILABLE:
            detail = f'<div style="color:{MUTED}">{UNAVAILABLE_TEXT}: {_esc(c.message)}</div>'
        elif c.state == FAILED:
            detail = f'<div style="white-space:pre-wrap">{_esc(c.message)}</div>'
            if c.hint:
                detail += f'<div style="color:{MUTED}">hint: <code>{_esc(c.hint)}</code></div>'
        points = MARKS[UNAVAILABLE] if c.state == UNAVAILABLE else f"{c.points}/{c.max_points}"
        # Plain divs, not a table: JupyterLab's rendered-HTML CSS centres and squeezes tables.
        rows.append(f'<div class="ckalab-check-row" data-passed="{_bool(c.passed)}" data-state="{c.state}" '
                    f'style="display:flex;gap:10px;padding:3px 4px;border-bottom:1px solid #eaeef2">'
                    f'<div style="width:1.4em;font-size:1.15em">{mark}</div>'
                    f'<div style="flex:1;text-align:left"><b>{_esc(c.title)}</b>{detail}</div>'
                    f'<div style="white-space:nowrap">{points}</div></div>')
    return f'<div>{"".join(rows)}</div>'


def message_html(text: str, kind: str = "info") -> str:
    """A one-message box (kind: info, error, ok, warn) for the notebook UIs."""
    colour = MESSAGE_COLOURS[kind]
    return (f'<div class="ckalab-msg ckalab-{kind}" style="border-left:4px solid {colour};padding:2px 8px;'
            f'white-space:pre-wrap">{_esc(text)}</div>')


def bundle_text(bundle: dict) -> str:
    """What `ckalab submit` says about the bundle it wrote: a line per lab."""
    lines = []
    for entry in bundle["labs"]:
        r = GradeResult.from_dict(entry)
        gone = f" ({len(r.unavailable())} {UNAVAILABLE_TEXT})" if r.unavailable() else ""
        lines.append(f"  {r.lab:<22} {r.score:>3}/{r.max_score:<3} {'passed' if r.passed else 'not passed'}{gone}")
    return printable("\n".join(lines))


# --- the mock exam ------------------------------------------------------------------------------
#
# A report (exam.grade) is a dict: "exam" (times, who ended it), "total" (percent, pass mark) and
# "tasks", each a GradeResult record (GradeResult.to_dict) with the task's n, title, weight,
# percent and `error` (the grader could not run) beside it.

def exam_tasks_text(state: dict, pass_mark: float, now: float | None = None, task_labs: list | None = None) -> str:
    """The running exam's task list (no results: no feedback until the end); with `task_labs`
    (the Lab of each task, in order) every task's text and work directory as well."""
    now = time.time() if now is None else now
    lines = [f"Mock exam {state['id']}: {len(state['tasks'])} tasks, {state['duration_min']:g} minutes, "
             f"time left {clock(state['deadline'] - now)} (ends {iso(state['deadline'])}).",
             f"No feedback until the end. Pass mark: {pass_mark:g}%.", ""]
    total = sum(t["weight"] for t in state["tasks"])
    for i, t in enumerate(state["tasks"]):
        lines.append(f"  {t['n']:>2}. [{t['weight']:>2} of {total}] {t['title']} ({t['lab']}, ~{t['minutes']} min)")
        if task_labs is not None:
            lab = task_labs[i]
            lines += [f"      {line}" for line in lab.task.rstrip().splitlines()]
            lines += [f"      Work directory: {lab.workdir}", ""]
    if task_labs is None:
        lines += ["", "Show a task: ckalab exam task N    Finish and grade: ckalab exam finish"]
    return "\n".join(lines)


def exam_task_text(state: dict, task: dict, lab) -> str:
    """One task of the running exam, with its text and work directory."""
    total = sum(x["weight"] for x in state["tasks"])
    return (f"Task {task['n']} ({task['weight']} points of {total}, ~{task['minutes']} min): {task['title']}"
            f"\n\n{lab.task.rstrip()}\n\nWork directory: {lab.workdir}")


def exam_report_text(report: dict) -> str:
    """report.txt and `ckalab exam finish`: the verdict, then per task its checks as `check` shows them."""
    e, total = report["exam"], report["total"]
    lines = [f"Mock exam {e['id']}: {total['percent']:.1f}% (pass mark {total['pass_mark']:g}%): "
             f"{'PASSED' if total['passed'] else 'NOT PASSED'}",
             f"  time used {clock(e['time_used_s'])} of {clock(e['duration_min'] * 60)} ({e['ended_by']})", ""]
    for t in report["tasks"]:
        r = GradeResult.from_dict(t)
        lines.append(f"{MARKS[PASSED] if r.passed else MARKS[FAILED]} {t['n']}. {t['title']} ({r.lab}): "
                     f"{r.score}/{r.max_score} points, {t['percent']:.0f}% of weight {t['weight']}")
        if t["error"]:
            lines.append(f"      could not grade: {t['error']}")
        for c in r.checks:
            lines.append(f"    {check_line(c)}")
            if c.state != PASSED:
                lines += [f"        {line}" for line in c.message.splitlines()]
    return printable("\n".join(lines))


def exam_report_html(report: dict, reports_dir=None) -> str:
    """The exam panel's report: the verdict, then per task a header line and its checks as in the
    lab bar; `reports_dir` (where report.txt/json/xml are) is named when given."""
    total, e = report["total"], report["exam"]
    tasks = []
    for t in report["tasks"]:
        r = GradeResult.from_dict(t)
        state = PASSED if r.passed else FAILED
        err = (f'<div class="ckalab-msg ckalab-error" style="white-space:pre-wrap">could not grade: '
               f'{_esc(t["error"])}</div>') if t["error"] else ""
        tasks.append(f'<div class="ckalab-exam-task-result" data-passed="{_bool(r.passed)}" '
                     f'style="margin-top:10px">'
                     f'<div style="display:flex;gap:10px;font-weight:bold;border-bottom:2px solid #d0d7de">'
                     f'<span style="color:{COLOURS[state]}">{MARKS[state]}</span>'
                     f'<span style="flex:1">{t["n"]}. {_esc(t["title"])} '
                     f'<span style="font-weight:normal;color:{MUTED}">({_esc(r.lab)})</span></span>'
                     f'<span style="white-space:nowrap">{r.score}/{r.max_score} points · '
                     f'{t["percent"]:.0f}% of weight {t["weight"]}</span></div>{err}{checks_html(r.checks)}</div>')
    passed = bool(total["passed"])
    where = f" Reports: {_esc(str(reports_dir))}/report.{{txt,json,xml}}" if reports_dir is not None else ""
    return (f'<div class="ckalab-exam-report" data-passed="{_bool(passed)}">'
            f'<div style="font-size:1.2em;font-weight:bold;color:{COLOURS[PASSED if passed else FAILED]}">'
            f'{total["percent"]:.1f}% (pass mark {total["pass_mark"]:g}%): {"passed" if passed else "not passed"}</div>'
            f'<div style="color:{MUTED}">Time used {clock(e["time_used_s"])} ({_esc(e["ended_by"])}).{where}</div>'
            f'{"".join(tasks)}</div>')


def _xml(root) -> str:
    import xml.etree.ElementTree as ET

    from .grading import xml_safe

    xml_safe(root)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _junit_case(parent, classname: str, c: CheckResult):
    """A check as a JUnit testcase: failed -> failure (message, hint), unavailable -> skipped."""
    import xml.etree.ElementTree as ET

    case = ET.SubElement(parent, "testcase", classname=classname, name=c.title)
    if c.state == UNAVAILABLE:
        ET.SubElement(case, "skipped", message=f"{UNAVAILABLE_TEXT}: {c.message}"[:200])
    elif c.state == FAILED:
        ET.SubElement(case, "failure", message=c.message.splitlines()[0][:200] if c.message else "",
                      type=c.id).text = c.message + (f"\nhint: {c.hint}" if c.hint else "")
    return case


def exam_junit(report: dict) -> str:
    """report.xml: a testsuite per task, a testcase per check (CI dashboards read it)."""
    import xml.etree.ElementTree as ET

    total = report["total"]
    results = [(t, GradeResult.from_dict(t)) for t in report["tasks"]]
    root = ET.Element("testsuites", name=f"ckalab mock exam {report['exam']['id']}",
                      tests=str(sum(max(1, len(r.checks)) for _, r in results)),
                      failures=str(sum(len(r.failed()) for _, r in results)),
                      errors=str(sum(1 for t, _ in results if t["error"])),
                      time=str(report["exam"]["time_used_s"]))
    props = ET.SubElement(root, "properties")
    for k, v in (("percent", total["percent"]), ("pass_mark", total["pass_mark"]), ("passed", total["passed"])):
        ET.SubElement(props, "property", name=k, value=str(v))
    for t, r in results:
        suite = ET.SubElement(root, "testsuite", name=f"{t['n']}. {r.lab}", tests=str(max(1, len(r.checks))),
                              failures=str(len(r.failed())), errors="1" if t["error"] else "0",
                              time=str(r.duration_s))
        sp = ET.SubElement(suite, "properties")
        for k in ("weight", "score", "max_score", "percent"):
            ET.SubElement(sp, "property", name=k, value=str(t[k]))
        if t["error"]:
            case = ET.SubElement(suite, "testcase", classname=r.lab, name="grader")
            ET.SubElement(case, "error", message=t["error"][:200]).text = t["error"]
        for c in r.checks:
            _junit_case(suite, r.lab, c)
    return _xml(root)


# --- the gradebook ----------------------------------------------------------------------------
#
# `book` is a results.Gradebook: rows (student -> lab -> kept bundle entry, a GradeResult record),
# rejected bundles, duplicates and the files written.

def gradebook_text(book) -> str:
    """What `ckalab gradebook` and `classroom grade` print: counts, then every rejected bundle,
    duplicate and check a backend could not run, and the files written; a line each."""
    dups = book.duplicates()
    lines = [f"{len(book.rows)} students, {len(book.lab_ids)} labs, {len(book.rejected)} rejected bundles, "
             f"{len(dups)} duplicates"]
    lines += [f"  rejected {f}: {why}" for f, why in book.rejected]
    lines += [f"  duplicate {s} / {lab}: {book.duplicate_note(cands, kept)}" for s, lab, cands, kept in dups]
    missing: dict[tuple[str, str, str], int] = {}
    for s in book.rows:
        for lab_id, c in book.unavailable(s):
            k = (lab_id, c["title"], book.backend_of(s, lab_id))
            missing[k] = missing.get(k, 0) + 1
    lines += [f"  {UNAVAILABLE_TEXT} ({b or '?'}): {lab_id}: {title} ({n} student{'s' * (n != 1)}; "
              "not counted in their maximum)" for (lab_id, title, b), n in sorted(missing.items())]
    lines += [f"  wrote {p}" for p in book.files]
    return "\n".join(printable(line, oneline=True) for line in lines)


def gradebook_junit(book) -> str:
    """gradebook.xml: a testsuite per student, a testcase per lab (failed: the failing checks;
    not submitted: skipped); rejected and duplicate bundles as suites of their own."""
    import xml.etree.ElementTree as ET

    root = ET.Element("testsuites", name="ckalab gradebook")
    for student in sorted(book.rows):
        row = {lab: GradeResult.from_dict(e) for lab, e in book.rows[student].items()}
        suite = ET.SubElement(root, "testsuite", name=student, tests=str(len(book.lab_ids)),
                              failures=str(sum(1 for i in book.lab_ids if i in row and not row[i].passed)),
                              skipped=str(sum(1 for i in book.lab_ids if i not in row)))
        for lab_id in book.lab_ids:
            r = row.get(lab_id)
            case = ET.SubElement(suite, "testcase", classname=student, name=lab_id,
                                 time=str(r.duration_s or 0) if r is not None else "0")
            if r is None:
                ET.SubElement(case, "skipped", message="not submitted")
                continue
            if not r.passed:
                ET.SubElement(case, "failure", message=f"{r.score}/{r.max_score} points").text = \
                    "\n".join(f"{c.title}: {c.message}" for c in r.failed())
            if r.unavailable():
                ET.SubElement(case, "system-out").text = "\n".join(
                    f"{UNAVAILABLE_TEXT} ({book.backend_of(student, lab_id) or '?'}): {c.title}: {c.message}"
                    for c in r.unavailable())
    for title, items in (("rejected bundles", [(n, "rejected", why) for n, why in book.rejected]),
                         ("duplicate bundles", [(f"{s} / {lab}", "duplicate", book.duplicate_note(c, k))
                                                for s, lab, c, k in book.duplicates()])):
        if not items:
            continue
        errors = len(items) if title == "rejected bundles" or book.rule == "flag" else 0
        suite = ET.SubElement(root, "testsuite", name=title, tests=str(len(items)), errors=str(errors))
        for name, kind, why in items:
            case = ET.SubElement(suite, "testcase", classname=kind, name=name)
            if errors:
                ET.SubElement(case, "error", message=why[:200]).text = why
            else:
                ET.SubElement(case, "system-out").text = why
    return _xml(root)


def class_grid_html(g: dict) -> str:
    """The class view's grid (dashboard.grid) as a static page: a coloured cell per student and
    lab with its score, state and failing checks, and each student's total."""
    head = "".join(f"<th>{_esc(lab['id'])}</th>" for lab in g["labs"])
    body = []
    for r in g["students"]:
        tds = []
        for lab in g["labs"]:
            c = r["cells"][lab["id"]]
            score = MARKS[UNAVAILABLE] if c["score"] is None else f"{c['score']}/{c['max']}"
            details = "".join(f"<li>{_esc(x['title'])}: {_esc(x['message'])}</li>" for x in c["failing"])
            note = f"<div>{_esc(c['note'])}</div>" if c["note"] else ""
            tds.append(f'<td class="{c["state"]}"><b>{score}</b> {_esc(CELL_TEXT[c["state"]])}{note}'
                       f'{"<ul>" + details + "</ul>" if details else ""}</td>')
        body.append(f"<tr><th>{_esc(r['id'])}</th>{''.join(tds)}<td>{r['score']}/{r['max']}</td></tr>")
    style = "".join(f".{s}{{background:{c}22;border-left:4px solid {c}}}" for s, c in CELL_COLOURS.items())
    return (f"<!doctype html><meta charset='utf-8'><title>Class {_esc(g['class'])}</title>"
            f"<style>body{{font-family:sans-serif}}td,th{{padding:4px 8px;vertical-align:top}}{style}</style>"
            f"<h1>Class {_esc(g['class'])}</h1><p>Graded at {_esc(g['graded_at'])}</p>"
            f"<table><tr><th>student</th>{head}<th>total</th></tr>{''.join(body)}</table>\n")


# --- classroom evidence (the API server's audit log) ------------------------------------------

def audit_line(call) -> str:
    """One classroom.AuditCall on one line: time, verb, object, answer, client, address."""
    what = f"{call.resource}/{call.name}" if call.name else call.resource
    where = f" -n {call.namespace}" if call.namespace else ""
    flags = (" DENIED" if call.denied else "") + ("" if call.own else f"  [other identity: {call.user}]")
    return printable(f"{call.time[11:23]}  {call.verb:<7} {what}{where}  {call.code}  "
                     f"{call.agent.split(' ')[0][:40]}  {call.ip}{flags}", oneline=True)


def evidence_text(ev: dict[str, dict], caveat: str, lab_id: str | None = None) -> str:
    """`ckalab classroom evidence`: per student the calls and a summary, then what it cannot show."""
    lines = []
    for sid, d in ev.items():
        s = d["summary"]
        lines.append(f"== {sid} (namespace {d['namespace']}){' lab ' + lab_id if lab_id else ''}")
        if not d["calls"]:
            lines.append("  no API calls with this student's identity in the log")
        lines += ["  " + audit_line(c) for c in d["calls"]]
        span = f"{s['first'][11:19]} .. {s['last'][11:19]} UTC" if s["first"] else "-"
        lines.append(f"  summary: {s['calls']} calls ({span}), {s['writes']} writes, {s['denied']} denied, "
                     f"{s['other_identity_writes']} writes by other identities in the namespace; "
                     f"{d['setup_writes']} writes by ckalab (setup, grading) not listed")
        if s["agents"]:
            lines.append(f"  clients: {', '.join(s['agents'])}; from {', '.join(s['ips'])}")
        lines += [f"  burst: {n} writes within {secs:.1f} s at {t[11:19]}" for t, n, secs in s["bursts"]]
    lines.append(caveat)
    return "\n".join(printable(x, oneline=True) for x in lines)
