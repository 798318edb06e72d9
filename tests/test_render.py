"""ckalab.render: one lab result as text, HTML and JUnit; the exam report stored as JSON and read
back (also as older ckalab versions wrote it); bad records get a message, not a traceback.
No cluster: rendering reads results, it does not make them."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from ckalab import exam, render
from ckalab.errors import CkalabError
from ckalab.grading import FAILED, PASSED, UNAVAILABLE, CheckResult, GradeResult

HOSTILE = "ConfigMap '<script>alert(1)</script>' & \"x\" in namespace 'dev'"


def a_result() -> GradeResult:
    return GradeResult("rbac-role", False, 2, 5, 0.25, [
        CheckResult("test_role", "Role exists", True, 2, 2),
        CheckResult("test_verbs", "Role grants list", False, 0, 3, HOSTILE + "\nsecond line",
                    "kubectl auth can-i list pods --as dev"),
        CheckResult.unavailable("test_traffic", "real traffic", "no pod traffic on this backend"),
    ], "stu-1")


def a_report(result: GradeResult, error: str | None = None) -> dict:
    """A graded exam as exam.grade writes it: each task is the GradeResult's record plus the task's fields."""
    task = {"n": 1, "lab": result.lab, "title": "RBAC", "weight": 6, "minutes": 6, "seed": result.seed,
            "params": {}, **result.to_dict(), "error": error, "percent": 40.0}
    return {"exam": {"id": "20261129-230000", "seed": None, "cluster": "c", "started_at": "s", "ended_at": "e",
                     "ended_by": "finished", "duration_min": 30, "time_used_s": 754.0, "ckalab_version": "x"},
            "tasks": [task], "total": {"percent": 40.0, "pass_mark": 66.0, "passed": False, "weight": 6,
                                       "score": 2, "max_score": 5}}


def test_a_lab_result_as_text():
    assert render.result_text(a_result()).splitlines() == [
        "rbac-role: 2/5 points, 1 of 2 checks failed, 1 not available on this backend (0.25s)",
        "  ✔ [2/2] Role exists",
        "  ✘ [0/3] Role grants list",
        "      " + HOSTILE,
        "      second line",
        "      hint: kubectl auth can-i list pods --as dev",
        "  – [-] real traffic: not available on this backend",
        "      no pod traffic on this backend"]
    assert a_result().render() == render.result_text(a_result())  # the method is the same renderer
    passed = GradeResult("x", True, 1, 1, 0.0, [CheckResult("t", "ok", True, 1, 1)])
    assert render.result_text(passed).splitlines()[0] == "x: 1/1 points, all checks passed (0.00s)"


def test_a_lab_result_as_html_escapes_the_learners_text():
    page = render.result_html(a_result())
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&amp; &quot;x&quot;" in page
    assert page.count('class="ckalab-check-row"') == 3
    assert [s for s in ("passed", "failed", "unavailable") if f'data-state="{s}"' in page] == [
        "passed", "failed", "unavailable"]
    assert "Score 2/5: 1 of 2 checks not passed yet, 1 not available on this backend" in page
    # The marks and colours come from one table.
    for state in (PASSED, FAILED, UNAVAILABLE):
        assert f'<span style="color:{render.COLOURS[state]}">{render.MARKS[state]}</span>' in page
    box = render.message_html("<b>bold</b>\x1b[2J", "error")
    assert "&lt;b&gt;" in box and "\x1b" not in box and render.MESSAGE_COLOURS["error"] in box


def test_junit_is_valid_xml_and_counts_failures():
    report = a_report(a_result())
    root = ET.fromstring(render.exam_junit(report))
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "0")
    suite = root.find("testsuite")
    assert (suite.get("name"), suite.get("failures")) == ("1. rbac-role", "1")
    failure = suite.find("testcase[@name='Role grants list']/failure")
    assert failure.get("message") == HOSTILE and failure.get("type") == "test_verbs"
    assert failure.text.endswith("hint: kubectl auth can-i list pods --as dev")
    assert suite.find("testcase[@name='real traffic']/skipped") is not None
    assert suite.find("testcase[@name='Role exists']/failure") is None
    # A task whose grader could not run: an error, no checks.
    broken = a_report(GradeResult("rbac-role", False, 0, 0, 0.0, []), error="The grader could not run")
    root = ET.fromstring(render.exam_junit(broken))
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("1", "0", "1")


def test_exam_report_round_trips_through_json(tmp_path):
    report = a_report(a_result())
    files = exam.write_reports(report, tmp_path)
    assert [f.name for f in files] == ["report.txt", "report.json", "report.xml"]
    again = json.loads((tmp_path / "report.json").read_text())
    assert GradeResult.from_dict(again["tasks"][0]) == a_result()
    assert render.exam_report_text(again) + "\n" == (tmp_path / "report.txt").read_text()
    assert render.exam_report_html(again, tmp_path) == render.exam_report_html(report, tmp_path)
    text = render.exam_report_text(again)
    assert text.splitlines()[:2] == ["Mock exam 20261129-230000: 40.0% (pass mark 66%): NOT PASSED",
                                     "  time used 0:12:34 of 0:30:00 (finished)"]
    assert "✘ 1. RBAC (rbac-role): 2/5 points, 40% of weight 6" in text


def test_records_written_by_older_versions_still_read():
    """An exam report from before check states (only `passed`), and a v1 bundle entry (no state,
    no hint): both render, the state following from `passed`."""
    old_checks = [{"id": "test_role", "title": "Role exists", "passed": True, "points": 2, "max_points": 2,
                   "message": ""},
                  {"id": "test_verbs", "title": "Role grants list", "passed": False, "points": 0, "max_points": 3,
                   "message": "verbs are [get]"}]
    old = a_report(GradeResult("rbac-role", False, 2, 5, 0.2, []))
    old["tasks"][0]["checks"] = old_checks
    text = render.exam_report_text(old)
    assert text.splitlines()[-3:] == ["    ✔ [2/2] Role exists", "    ✘ [0/3] Role grants list",
                                      "        verbs are [get]"]
    entry = {"lab": "rbac-role", "seed": None, "params": {}, "digest": "d", "started_at": None, "graded_at": 1.0,
             "duration_s": None, "score": 2, "max_score": 5, "passed": False, "checks": old_checks}
    r = GradeResult.from_dict(entry)
    assert [c.state for c in r.checks] == [PASSED, FAILED] and r.checks[1].hint == ""
    assert render.bundle_text({"labs": [entry]}) == "  rbac-role                2/5   not passed"
    # A record from a newer ckalab (an extra key) reads too.
    assert CheckResult.from_dict({**old_checks[0], "new_field": 1}).state == PASSED


@pytest.mark.parametrize("record, says", [
    ([1, 2], "A lab result record is not an object (list)."),
    ({"lab": "x", "passed": True}, "A lab result record has no score, max_score, duration_s."),
    ({"lab": "x", "passed": True, "score": 1, "max_score": 1, "duration_s": 0, "checks": "all"},
     "The checks of lab result 'x' are not a list."),
    ({"lab": "x", "passed": True, "score": 1, "max_score": 1, "duration_s": 0, "checks": [{"id": "t"}]},
     "A check result record has no title, passed, points, max_points."),
])
def test_a_bad_record_is_a_message(record, says):
    with pytest.raises(CkalabError) as e:
        GradeResult.from_dict(record)
    assert str(e.value) == says


def test_class_grid_page_escapes_student_text_and_colours_by_state():
    g = {"class": "w<1>", "graded_at": "2026-11-29T23:00:00+00:00", "labs": [{"id": "rbac-role", "title": "RBAC"}],
         "students": [{"id": "<b>ana</b>", "score": 2, "max": 5, "cells": {"rbac-role": {
             "state": "failed", "score": 2, "max": 5, "note": "", "unavailable": [],
             "failing": [{"title": "Role grants list", "message": HOSTILE}]}}}]}
    page = render.class_grid_html(g)
    assert "<script>" not in page and "<b>ana" not in page and "&lt;b&gt;ana&lt;/b&gt;" in page
    assert '<td class="failed"><b>2/5</b> some checks failed' in page
    assert all(f".{s}{{background:{c}22" in page for s, c in render.CELL_COLOURS.items())
