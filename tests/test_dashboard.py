"""The live class view on a real classroom (the test cluster as the shared cluster): grid states
from real grading, the page in headless Chromium (colours, click for the failing checks, the
refresh when a student fixes their lab), and the CSV/HTML export of the last grid."""

from __future__ import annotations

import csv
import json
import urllib.request
from pathlib import Path

import pytest

from ckalab import classroom, cli, dashboard, grading, labs, render
from ckalab.kube import Kube

CLASS = "dash"
LAB = "rbac-role"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"   # gitignored
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def room(cluster, tmp_path_factory):
    """ana solved rbac-role, ben made only the Role, cyd did nothing, and dee's setup failed
    (recorded in the classroom state the way `up` records a failure). Not test_classroom's
    names: a student id gives the same user name in every class (see classroom.IDENTITY_PARAMS),
    and that module's class may still be going away."""
    roster = tmp_path_factory.mktemp("roster") / "roster.csv"
    roster.write_text("student\nana\nben\ncyd\n")
    state = classroom.up(cluster.kubeconfig, roster, CLASS, [LAB])
    students = {s["id"]: classroom.Student(**s) for s in state["students"]}
    ext = classroom.ExternalCluster(cluster.kubeconfig, CLASS)
    labs.solve(classroom.student_lab(LAB, students["ana"], CLASS), ext)
    ben = classroom.student_lab(LAB, students["ben"], CLASS)
    Kube(cluster.kubeconfig).apply_all([o for o in ben.manifests("solution") if o["kind"] == "Role"], ben.label)
    path = classroom.classroom_dir(CLASS) / "classroom.json"
    saved = json.loads(path.read_text())
    saved["students"].append({"id": "dee", "slug": "dee", "namespace": f"{CLASS}-dee"})
    saved["failed"] = {"dee": "ApiException: (403) namespace quota exceeded"}
    path.write_text(json.dumps(saved))
    yield saved, students, ext
    classroom.down(CLASS)


def expected_failures(lab, cluster):
    return [(c.title, c.message) for c in grading.run_direct(lab, cluster, Kube(cluster.kubeconfig)).checks
            if c.state == grading.FAILED]


def test_grid_states_from_real_grading(room):
    state, students, ext = room
    book = classroom.grade(CLASS, workers=2, write=False)
    g = dashboard.grid(book, state)
    cells = {s["id"]: s["cells"][LAB] for s in g["students"]}
    assert {k: c["state"] for k, c in cells.items()} == {
        "ana": "passed", "ben": "failed", "cyd": "not-started", "dee": "unavailable"}
    assert cells["ana"]["score"] == cells["ana"]["max"] == 10 and cells["ana"]["failing"] == []
    ben = classroom.student_lab(LAB, students["ben"], CLASS)
    assert [(f["title"], f["message"]) for f in cells["ben"]["failing"]] == expected_failures(ben, ext)
    assert 0 < cells["ben"]["score"] < 10 and cells["cyd"]["score"] == 0
    assert cells["dee"] == {"state": "unavailable", "score": None, "max": None, "failing": [],
                             "note": "not set up: ApiException: (403) namespace quota exceeded"}
    assert g["counts"] == {"passed": 1, "failed": 1, "not-started": 1, "unavailable": 1}
    # A grader that crashes costs its cell, shown as not available with the reason.
    crashed = {"checks": [{"id": "grader", "title": "grader runs", "state": "failed", "message": "boom"}],
               "score": 0, "max_score": 0, "passed": False}
    assert dashboard.cell_of(crashed)["note"] == "the grader could not run: boom"


def test_export_csv_and_html(room, tmp_path, capsys):
    state, _, _ = room
    g = dashboard.grid(classroom.grade(CLASS, workers=2, write=False), state)
    g["students"][1]["id"] = "=cmd|' /C calc'!A0"   # text from a roster is neutralised in the CSV
    rows = list(csv.DictReader(open(dashboard.export(g, tmp_path / "grid.csv"))))
    assert [(r["student"], r[LAB], r[f"{LAB} state"]) for r in rows] == [
        ("ana", "10", "passed"), ("'=cmd|' /C calc'!A0", rows[1][LAB], "failed"), ("cyd", "0", "not-started"),
        ("dee", "", "unavailable")]
    assert rows[1]["failing"].startswith(f"{LAB}: ")
    page = dashboard.export(g, tmp_path / "grid.html").read_text()
    assert '<td class="passed"><b>10/10</b> all checks passed' in page and "&lt;" not in page[:50]
    assert "not set up: ApiException: (403) namespace quota exceeded" in page
    # The CLI: serve for a moment on any free port, then export the last grid.
    assert cli.main(["classroom", "watch", "--class", CLASS, "--port", "0", "--interval", "1", "--duration", "4",
                     "--export", str(tmp_path / "end.csv")]) == 0
    out = capsys.readouterr().out
    assert "Wrote the last grid" in out and (tmp_path / "end.csv").is_file()
    assert cli.main(["classroom", "watch", "--class", "nope", "--port", "0"]) == 2
    assert "No classroom 'nope' here: run 'ckalab classroom up' first." in capsys.readouterr().err


@pytest.mark.skipif(not CHROMIUM.exists(), reason="chromium is not installed (apt-get install chromium)")
def test_class_view_in_chromium(room, cluster, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    state, students, ext = room
    w = dashboard.Watch(CLASS, port=0, interval=1.0, workers=2).start()
    try:
        assert urllib.request.urlopen(w.url, timeout=5).read().decode().count('<table id="grid">') == 1
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1100, "height": 700})
                page.set_default_timeout(30_000)
                page.goto(w.url)

                def cell(sid):
                    return page.locator(f"td.cell[data-student='{sid}'][data-lab='{LAB}']")

                for sid, st in (("ana", "passed"), ("ben", "failed"), ("cyd", "not-started"),
                                ("dee", "unavailable")):
                    expect(cell(sid)).to_have_attribute("data-state", st)
                # One snapshot of the whole grid (it is rebuilt every second): each state its colour.
                seen = page.evaluate("() => [...document.querySelectorAll('td.cell')].map("
                                     "e => [e.dataset.state, getComputedStyle(e).backgroundColor])")
                rgb = {st: "rgb({}, {}, {})".format(*(int(c[i:i + 2], 16) for i in (1, 3, 5)))
                       for st, c in render.CELL_COLOURS.items()}
                assert sorted(seen) == sorted([st, rgb[st]] for st in dashboard.STATES)
                expect(cell("ana")).to_have_text("10/10")
                # Click: the failing checks with the grader's own messages.
                cell("ben").click()
                ben = classroom.student_lab(LAB, students["ben"], CLASS)
                failing = page.locator("#failing li")
                expected = expected_failures(ben, ext)
                expect(failing).to_have_count(len(expected))
                for (title, message), li in zip(expected, failing.all()):
                    assert li.inner_text() == f"{title}: {message}"
                ARTIFACTS.mkdir(exist_ok=True)
                page.screenshot(path=str(ARTIFACTS / "class-view.png"), full_page=True)
                # Bob finishes the lab: the next round turns his cell green without a reload,
                # and the details under the selected cell follow.
                labs.solve(ben, ext)
                expect(cell("ben")).to_have_attribute("data-state", "passed", timeout=30_000)
                expect(page.locator("#details")).to_contain_text("Every check passed.")
                assert w.rounds >= 2 and w.error == ""
            finally:
                browser.close()
    finally:
        w.stop()   # the last test of the module: ben's solved lab goes with the classroom


def test_bad_input_gets_a_message(room, capsys):
    for argv, message in (
            (["--interval", "0"], "error: --interval must be a positive number of seconds.\n"),
            (["--class", "Nope!"], "error: No classroom 'Nope!' here: run 'ckalab classroom up' first.\n")):
        assert cli.main(["classroom", "watch", "--class", CLASS, "--port", "0", *argv]) == 2
        assert capsys.readouterr().err == message
    busy = dashboard.Watch(CLASS, port=0, interval=60)
    try:
        assert cli.main(["classroom", "watch", "--class", CLASS, "--port", str(busy.port)]) == 2
        assert capsys.readouterr().err == (
            f"error: Cannot serve the class view on 127.0.0.1:{busy.port}: Address already in use. "
            "Choose another --port (0 picks a free one).\n")
    finally:
        busy.server.server_close()
