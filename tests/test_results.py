"""Result bundles from the learner's machine, and the instructor's gradebook that verifies them."""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from ckalab import cli, grading, labs, render, results
from ckalab.errors import CkalabError


@pytest.fixture
def key_file(tmp_path):
    return results.new_key(tmp_path / "course.key")


@pytest.fixture
def bundles(lab_harness, cluster, key_file, tmp_path):
    """Two students on the real cluster: stu-1 solved rbac-role (own variant), stu-2 did not."""
    d = tmp_path / "bundles"
    lab_harness("rbac-role", "stu-1").solve()
    results.submit("stu-1", cluster, d / "stu-1.json", key_file, ["rbac-role"], seed="stu-1")
    lab_harness("rbac-role", "stu-2")
    results.submit("stu-2", cluster, d / "stu-2.json", key_file, ["rbac-role"], seed="stu-2")
    return d


def rows(path):
    return {r["student"]: r for r in csv.DictReader(open(path))}


def test_bundle_content(bundles, key_file):
    b = json.loads((bundles / "stu-1.json").read_text())
    assert b["format"] == "ckalab-result/v2" and b["student"] == "stu-1" and b["ckalab_version"]
    assert b["backend"] == "local"
    (e,) = b["labs"]
    assert e["lab"] == "rbac-role" and e["seed"] == "stu-1" and e["params"] == labs.load("rbac-role", "stu-1").params
    assert e["digest"] == labs.load("rbac-role").files_digest()
    assert e["score"] == e["max_score"] == 10 and e["passed"] and e["graded_at"] and e["duration_s"] > 0
    assert [c["id"] for c in e["checks"]][:2] == ["test_role_exists", "test_role_rules"]
    assert {(c["state"], c["passed"]) for c in e["checks"]} == {("passed", True)}
    assert b["signature"]["alg"] == "HMAC-SHA256" and results.signature_ok(b, results.read_key(key_file))


def test_gradebook_accepts_good_bundles(bundles, key_file, tmp_path):
    book = results.gradebook(bundles, key_file, tmp_path / "out")
    assert book.rejected == []
    r = rows(tmp_path / "out" / "gradebook.csv")
    assert list(r["stu-1"])[:2] == ["student", labs.lab_ids()[0]] and "rbac-role" in r["stu-1"]
    assert (r["stu-1"]["rbac-role"], r["stu-1"]["total"], r["stu-1"]["labs_passed"]) == ("10", "10", "1")
    assert (r["stu-2"]["rbac-role"], r["stu-2"]["total"], r["stu-2"]["labs_passed"]) == ("0", "0", "0")
    assert r["(max)"]["rbac-role"] == "10"
    assert {r["stu-1"][i] for i in labs.lab_ids() if i != "rbac-role"} == {""}  # not submitted: empty
    # Not submitted counts the lab's full maximum; the (max) row has the full maxima.
    assert r["stu-1"]["max"] == r["(max)"]["max"] == r["(max)"]["total"]
    assert (r["stu-1"]["backend"], r["stu-1"]["not_available"], r["stu-1"]["duplicates"]) == ("local", "", "")
    root = ET.parse(tmp_path / "out" / "gradebook.xml").getroot()
    stu2 = root.find("testsuite[@name='stu-2']")
    failure = stu2.find("testcase[@name='rbac-role']/failure")
    role = labs.load("rbac-role", "stu-2").params["role"]
    assert failure.get("message") == "0/10 points"
    assert failure.text.startswith(f"Role exists: Role '{role}' not found in namespace 'default'")


def _resign(b, key_file):
    return results.sign(b, results.read_key(key_file))


def test_a_bundle_without_hints_still_verifies_and_grades_the_same(bundles, key_file, tmp_path):
    """A bundle's lab is the GradeResult's record, hints included; a v2 bundle written before
    that (no `hint`) is the same format and gives the same gradebook."""
    new = json.loads((bundles / "stu-2.json").read_text())
    assert any(c["hint"] for c in new["labs"][0]["checks"])   # stu-2 did nothing: failed checks with hints
    old = copy.deepcopy(new)
    old["labs"][0]["checks"] = [{k: v for k, v in c.items() if k != "hint"} for c in old["labs"][0]["checks"]]
    for name, bundle in (("new", new), ("old", _resign(old, key_file))):
        (tmp_path / name).mkdir()
        (tmp_path / name / "stu-2.json").write_text(json.dumps(bundle))
        assert results.gradebook(tmp_path / name, key_file).rejected == []
    assert (tmp_path / "old" / "gradebook.xml").read_text() == (tmp_path / "new" / "gradebook.xml").read_text()
    assert (tmp_path / "old" / "gradebook.csv").read_text() == (tmp_path / "new" / "gradebook.csv").read_text()


def test_gradebook_rejects_with_reasons_and_never_crashes(bundles, key_file, tmp_path, capsys):
    good = json.loads((bundles / "stu-1.json").read_text())
    key = results.read_key(key_file)

    def put(name, data):
        (bundles / name).write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())

    edited = copy.deepcopy(good)
    edited["labs"][0]["score"] = 11
    put("a-edited.json", edited)                                   # edited, signature kept
    put("b-otherkey.json", results.sign(good, b"another-course-key-0123456789"))
    rescored = copy.deepcopy(good)
    rescored["labs"][0]["checks"][0].update(points=3, max_points=3)  # re-signed by someone with the key
    put("c-rescored.json", _resign(rescored, key_file))
    faked = copy.deepcopy(json.loads((bundles / "stu-2.json").read_text()))
    faked["labs"][0]["score"] = 10
    put("d-faked.json", _resign(faked, key_file))
    unknown = copy.deepcopy(good)
    unknown["labs"][0]["lab"] = "no-such-lab"
    put("e-unknown.json", _resign(unknown, key_file))
    moved = copy.deepcopy(good)
    moved["labs"][0]["params"]["user"] = "someone-else"
    put("f-params.json", _resign(moved, key_file))
    put("g-garbage.json", b"\x89PNG\r\n\x1a\n\x00\xff")
    put("h-truncated.json", b'{"format": "ckalab-result/v1", "stud')
    put("i-list.json", b"[1, 2]")
    (bundles / "j-dir.json").mkdir()
    put("k-nosig.json", {k: v for k, v in good.items() if k != "signature"})
    put("l-deep.json", b"[" * 200_000)                             # 200 KB of nesting, no key needed
    put("m-huge.json", b" " * (results.MAX_BUNDLE_BYTES + 1))
    typed = copy.deepcopy(good)
    typed["labs"][0]["graded_at"] = "yesterday"                    # signed, but not a time
    put("n-typed.json", _resign(typed, key_file))
    twice = copy.deepcopy(good)
    twice["labs"].append(copy.deepcopy(good["labs"][0]))
    put("o-twice.json", _resign(twice, key_file))
    put("p-longid.json", _resign({**good, "student": "x" * 201}, key_file))
    assert results.signature_ok(good, key)

    book = results.gradebook(bundles, key_file, tmp_path / "out")
    why = dict(book.rejected)
    assert why["a-edited.json"] == why["b-otherkey.json"] == why["k-nosig.json"] == (
        "bad signature (edited after signing, or signed with another course key)")
    assert why["c-rescored.json"] == ("checks of 'rbac-role' do not match the course grader: "
                                      "test_role_exists differs in title or points")
    assert why["d-faked.json"] == "score of 'rbac-role' does not add up from its checks"
    assert why["e-unknown.json"] == "unknown lab 'no-such-lab'"
    assert why["f-params.json"] == "parameters of 'rbac-role' do not match its seed"
    assert why["g-garbage.json"].startswith("malformed JSON (UnicodeDecodeError: ")
    assert why["h-truncated.json"].startswith("malformed JSON (JSONDecodeError: ")
    assert why["i-list.json"] == "malformed: not a ckalab result bundle (format 'ckalab-result/v2' expected)"
    assert why["j-dir.json"] == "malformed: not a file"
    assert why["l-deep.json"] == "malformed: JSON nested deeper than 32 levels"
    assert why["m-huge.json"] == "malformed: larger than 2000000 bytes"
    assert why["n-typed.json"] == "malformed: wrong type of graded_at in 'rbac-role'"
    assert why["o-twice.json"] == "malformed: a lab is listed twice"
    assert why["p-longid.json"] == "malformed: student id longer than 200 characters"
    assert set(book.rows) == {"stu-1", "stu-2"} and len(why) == 16
    errors = ET.parse(tmp_path / "out" / "gradebook.xml").getroot().findall(
        "testsuite[@name='rejected bundles']/testcase")
    assert len(errors) == 16
    # The CLI lists them and exits 1.
    assert cli.main(["gradebook", str(bundles), "--key-file", str(key_file), "--out", str(tmp_path / "o2")]) == 1
    out = capsys.readouterr().out
    assert out.startswith("2 students, ") and "  rejected d-faked.json: score of 'rbac-role' does not add up" in out


def test_edited_grader_is_detected(lab_harness, cluster, key_file, tmp_path, monkeypatch):
    """A learner whose copy of the grader was edited (here: an extra comment) gets a different
    digest; the gradebook recomputes it from the instructor's copy and rejects the bundle."""
    mine = tmp_path / "copy"
    shutil.copytree(labs.labs_root(), mine / "labs")
    shutil.copytree(labs.graders_root(), mine / "graders")
    with open(mine / "graders" / "rbac-role.py", "a") as f:
        f.write("\n# every check passes on my machine\n")
    lab_harness("rbac-role", "stu-3").solve()
    monkeypatch.setenv("CKALAB_LABS_DIR", str(mine / "labs"))
    monkeypatch.setenv("CKALAB_GRADERS_DIR", str(mine / "graders"))
    results.submit("stu-3", cluster, tmp_path / "in" / "stu-3.json", key_file, ["rbac-role"], seed="stu-3")
    monkeypatch.delenv("CKALAB_LABS_DIR")
    monkeypatch.delenv("CKALAB_GRADERS_DIR")
    book = results.gradebook(tmp_path / "in", key_file)
    assert book.rejected == [("stu-3.json", "grader hash mismatch for 'rbac-role' (the lab or grader files differ "
                                            "from the course's; update ckalab and submit again)")]


def test_key_handling(tmp_path, key_file, cluster, capsys):
    with pytest.raises(CkalabError) as e:
        results.new_key(key_file)
    assert "is never overwritten" in str(e.value)
    (tmp_path / "short.key").write_text("abc\n")
    with pytest.raises(CkalabError) as e:
        results.read_key(tmp_path / "short.key")
    assert str(e.value) == f"The course key {tmp_path / 'short.key'} is too short (3 bytes; at least 16)."
    assert cli.main(["submit", "--student", "x", "--key-file", str(tmp_path / "none.key"), "--out",
                     str(tmp_path / "x.json"), "--name", cluster.name]) == 2
    assert "Cannot read the course key" in capsys.readouterr().err
    assert cli.main(["keygen", str(tmp_path / "k2")]) == 0 and len(results.read_key(tmp_path / "k2")) == 64


def test_submit_defaults_to_started_labs_with_their_seed(lab_harness, cluster, key_file, tmp_path, capsys):
    lab_harness("rbac-role", "stu-4")  # started (reset) with the student's seed
    assert results.started_labs()["rbac-role"] == "stu-4"
    assert cli.main(["submit", "--student", "stu-4", "--key-file", str(key_file), "--out",
                     str(tmp_path / "s.json"), "--name", cluster.name]) == 0
    b = json.loads((tmp_path / "s.json").read_text())
    entry = next(e for e in b["labs"] if e["lab"] == "rbac-role")
    assert entry["seed"] == "stu-4" and entry["started_at"]
    assert "Hand this file in." in capsys.readouterr().out


# --- checks a backend cannot run, and every lab's real bundle ------------------------------------

def test_every_lab_bundle_is_accepted_with_its_backend_maximum(kwok_nodes, lab_harness, key_file, tmp_path):
    """Every lab solved on the local cluster's kwok fallback and graded; one bundle; the gradebook
    accepts it with full marks out of that backend's maximum and names the checks it could not run."""
    cluster = kwok_nodes
    cat, entries = results.Catalogue(), []
    for lab_id in labs.lab_ids():
        if not labs.runs_on(labs.load(lab_id), cluster):
            continue  # a control-plane lab: needs real nodes (its own tests run there)
        h = lab_harness(lab_id)
        h.solve()
        r = h.grade()
        assert r.passed, r.render()
        entries.append(results.lab_entry(h.lab, r))
    d = tmp_path / "in"
    d.mkdir()
    bundle = results.make_bundle("all-labs", entries, results.read_key(key_file), {"backend": cluster.backend})
    (d / "all-labs.json").write_text(json.dumps(bundle))
    # The course: every lab this cluster runs (the control-plane labs need real nodes).
    book = results.gradebook(d, key_file, tmp_path / "out", lab_ids=[e["lab"] for e in entries])
    assert book.rejected == []
    table = rows(tmp_path / "out" / "gradebook.csv")
    row = table["all-labs"]
    gone = {e["lab"]: [c["id"] for c in e["checks"] if c["state"] == "unavailable"] for e in entries}
    for e in entries:  # every check is in the bundle, unavailable ones included
        assert [c["id"] for c in e["checks"]] == list(cat.checks(e["lab"])), e["lab"]
        assert int(row[e["lab"]]) == e["max_score"] == sum(
            p for i, p in cat.checks(e["lab"]).items() if i not in gone[e["lab"]])
    assert gone["network-policies"] == ["test_real_traffic"] and gone["rbac-role"] == []
    assert gone["image-pull-secrets"] == ["test_pods_pull_the_image"]
    assert gone["service-accounts"] == ["test_dashboard_calls_the_api"]
    assert {lab for lab, ids in gone.items() if ids} == {"network-policies", "security-contexts", "service-accounts",
                                                         "image-pull-secrets"}
    assert (row["total"], row["percent"], row["labs_passed"]) == (row["max"], "100.0", str(len(entries)))
    assert int(row["max"]) == int(table["(max)"]["max"]) - sum(
        cat.checks(lab)[i] for lab, ids in gone.items() for i in ids)
    assert row["not_available"].split("; ") == [f"{lab}/{i}" for lab, ids in sorted(gone.items()) for i in ids]
    assert ("not available on this backend (local): network-policies: real connections between the lab's pods "
            "follow the policy (1 student; not counted in their maximum)") in render.gradebook_text(book)
    case = ET.parse(tmp_path / "out" / "gradebook.xml").getroot().find(
        "testsuite[@name='all-labs']/testcase[@name='network-policies']")
    assert case.find("failure") is None
    assert case.find("system-out").text == ("not available on this backend (local): real connections between the "
                                            "lab's pods follow the policy: no pod traffic on this backend")


@pytest.fixture
def netpol_bundle(kwok_nodes, lab_harness, key_file, tmp_path):
    """network-policies graded on the kwok fallback, which has no pod traffic: its real-traffic
    check is 'unavailable' there (the session may run on real nodes: this module then switches)."""
    lab_harness("network-policies").solve()
    results.submit("np-1", kwok_nodes, tmp_path / "np.json", key_file, ["network-policies"])
    return json.loads((tmp_path / "np.json").read_text())


def test_unavailable_is_only_accepted_where_the_backend_lacks_a_need(netpol_bundle, bundles, key_file, tmp_path):
    d = tmp_path / "checked"
    d.mkdir()
    (d / "a-local.json").write_text(json.dumps(netpol_bundle))
    kind = copy.deepcopy(netpol_bundle)
    kind["backend"] = "kind"                                       # kind carries real traffic: no excuse there
    (d / "b-kind.json").write_text(json.dumps(_resign(kind, key_file)))
    dropped = copy.deepcopy(json.loads((bundles / "stu-1.json").read_text()))
    c = dropped["labs"][0]["checks"][1]                            # rbac-role has no needs
    c.update(state="unavailable", passed=False, points=0, max_points=0)
    dropped["labs"][0].update(score=10 - 3, max_score=10 - 3)
    (d / "c-dropped.json").write_text(json.dumps(_resign(dropped, key_file)))
    v1 = copy.deepcopy(netpol_bundle)                              # as ckalab wrote it before states
    v1["format"] = "ckalab-result/v1"
    v1["labs"][0]["checks"] = [{k: v for k, v in c.items() if k != "state"} for c in v1["labs"][0]["checks"]
                               if c["state"] != "unavailable"]
    (d / "d-v1.json").write_text(json.dumps(_resign(v1, key_file)))
    real = copy.deepcopy(netpol_bundle)                            # local with real nodes enforces policies
    assert "netpol-enforcement" not in real["features"]
    real["features"] = sorted({*real["features"], "netpol-enforcement", "exec", "traffic"})
    (d / "f-real-nodes.json").write_text(json.dumps(_resign(real, key_file)))
    old = copy.deepcopy(json.loads((bundles / "stu-2.json").read_text()))
    old["format"] = "ckalab-result/v1"
    old["student"] = "stu-old"
    for c in old["labs"][0]["checks"]:
        del c["state"]
    (d / "e-v1-ok.json").write_text(json.dumps(_resign(old, key_file)))
    book = results.gradebook(d, key_file, tmp_path / "out")
    assert dict(book.rejected) == {
        "b-kind.json": "check test_real_traffic of 'network-policies' is marked unavailable, but the kind backend "
                       "can run every check of this lab",
        "c-dropped.json": "check test_role_rules of 'rbac-role' is marked unavailable, but the local backend can "
                          "run every check of this lab",
        "d-v1.json": "checks of 'network-policies' do not match the course grader: missing test_real_traffic (a v1 "
                     "bundle leaves out the checks its backend cannot run: submit again with this ckalab)",
        "f-real-nodes.json": "check test_real_traffic of 'network-policies' is marked unavailable, but the local "
                             "backend can run every check of this lab",
    }
    r = rows(tmp_path / "out" / "gradebook.csv")
    assert (r["np-1"]["network-policies"], r["np-1"]["not_available"]) == ("14", "network-policies/test_real_traffic")
    assert r["(max)"]["network-policies"] == "16" and r["stu-old"]["rbac-role"] == "0"  # v1 still read


# --- hardening: control characters, formulas, file names, duplicates, seeds ------------------------

def test_hostile_text_is_neutralised_in_csv_xml_and_terminal(bundles, key_file, tmp_path, capsys):
    """Student ids and messages (which echo the learner's own objects) with control characters,
    terminal escapes and spreadsheet formulas; a file name that is not UTF-8."""
    base = json.loads((bundles / "stu-2.json").read_text())
    d = tmp_path / "hostile"
    d.mkdir()
    for n, sid in enumerate(['=HYPERLINK("http://x")', "+1", "-2", "@SUM(A1)", "\tstu", "stu\x1b[2J\x07\x00x"]):
        b = copy.deepcopy(base)
        b["student"] = sid
        b["labs"][0]["checks"][0]["message"] = "Role '\x1b]0;title\x07\x0bevil' \x1b[31mnot found\x01"
        (d / f"{n}.json").write_text(json.dumps(_resign(b, key_file)))
    with open(os.fsencode(d) + b"/caf\xe9\x1b[1m.json", "wb") as f:
        f.write(b"{}")
    assert cli.main(["gradebook", str(d), "--key-file", str(key_file), "--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "\x1b" not in out and "  rejected caf\\xe9\\x1b[1m.json: malformed: not a ckalab result bundle" in out
    text = (tmp_path / "out" / "gradebook.csv").read_text()
    assert not set(text) & {"\x1b", "\x07", "\x00", "\x01", "\x0b"}
    students = [r["student"] for r in rows(tmp_path / "out" / "gradebook.csv").values()][1:]
    assert sorted(students) == sorted(["'=HYPERLINK(\"http://x\")", "'+1", "'-2", "'@SUM(A1)", "stu",
                                       "stu\\x1b[2Jx"])  # ids are stripped: the tab goes
    assert [results.cell(x) for x in ("\tx", "-1", -1, "a=b")] == ["' x", "'-1", -1, "a=b"]
    root = ET.parse(tmp_path / "out" / "gradebook.xml").getroot()  # parses: nothing XML cannot carry
    suite = next(s for s in root.findall("testsuite") if s.get("name") == "stu\\x1b[2Jx")
    assert suite.find("testcase[@name='rbac-role']/failure").text.startswith(
        "Role exists: Role '\\x1b]0;titleevil' \\x1b[31mnot found\n")
    assert root.find("testsuite[@name='rejected bundles']/testcase").get("name") == "caf\\xe9\\x1b[1m.json"


def test_duplicates_are_shown_and_the_rule_is_the_instructors(lab_harness, cluster, key_file, tmp_path, capsys):
    d = tmp_path / "dups"
    lab_harness("rbac-role", "stu-5").solve()
    results.submit("stu-5", cluster, d / "a-first.json", key_file, ["rbac-role"], seed="stu-5")
    lab_harness("rbac-role", "stu-5")                              # later, the work is gone: 0 points
    results.submit("stu-5", cluster, d / "b-later.json", key_file, ["rbac-role"], seed="stu-5")

    def run(*rule):
        code = cli.main(["gradebook", str(d), "--key-file", str(key_file), "--out", str(tmp_path / "o"), *rule])
        return code, capsys.readouterr().out, rows(tmp_path / "o" / "gradebook.csv")["stu-5"]

    code, out, row = run()                                         # default: flag
    note = "a-first.json (10/10), b-later.json (0/10); kept b-later.json"
    flagged = f"{note} (newest; flagged: choose with --duplicates newest|best)"
    assert code == 1 and row["rbac-role"] == "0"
    assert f"  duplicate stu-5 / rbac-role: {flagged}" in out
    assert row["duplicates"] == f"rbac-role: {flagged}"
    code, out, row = run("--duplicates", "newest")
    assert (code, row["rbac-role"]) == (0, "0") and f"{note} (newest)" in out
    code, out, row = run("--duplicates", "best")
    assert (code, row["rbac-role"]) == (0, "10")
    assert "a-first.json (10/10), b-later.json (0/10); kept a-first.json (best)" in out
    xml = ET.parse(tmp_path / "o" / "gradebook.xml").getroot().find("testsuite[@name='duplicate bundles']")
    assert xml.get("errors") == "0" and xml.find("testcase").get("name") == "stu-5 / rbac-role"


def test_seeds_per_student(bundles, key_file, tmp_path):
    """With --seeds student, a variant counts only for the student whose id is its seed."""
    d = tmp_path / "seeds"
    d.mkdir()
    shutil.copy(bundles / "stu-1.json", d / "a-own.json")
    borrowed = json.loads((bundles / "stu-2.json").read_text())
    borrowed["student"] = "stu-9"                                  # stu-2's variant handed in as stu-9's
    (d / "b-borrowed.json").write_text(json.dumps(_resign(borrowed, key_file)))
    assert results.gradebook(d, key_file, tmp_path / "o1").rejected == []   # default: any seed
    book = results.gradebook(d, key_file, tmp_path / "o2", seeds="student")
    assert book.rejected == [("b-borrowed.json", "seed of 'rbac-role' is 'stu-2', not the student's id "
                                                 "(seeds are per student here)")]
    assert set(book.rows) == {"stu-1"}


def test_every_rendering_marks_unavailable_checks_and_drops_control_characters():
    """The exam report (text, JUnit, HTML) and the notebook's lab bar, from one graded lab with a
    passed, a failed (echoing a hostile value) and an unavailable check."""
    checks = [grading.CheckResult("test_a", "exists", True, 2, 2),
              grading.CheckResult("test_b", "value", False, 0, 3, "value is '\x1b[2J\x00boom'", "kubectl get cm"),
              grading.CheckResult.unavailable("test_c", "real traffic", "no pod traffic on this backend")]
    r = grading.GradeResult("lab-x", False, 2, 5, 0.1, checks)
    task = {"n": 1, "lab": "lab-x", "title": "Lab X", "weight": 5, "minutes": 8, "seed": None, "params": {},
            "score": 2, "max_score": 5, "passed": False, "duration_s": 0.1, "percent": 40.0, "error": None,
            "checks": [dataclasses.asdict(c) for c in checks]}
    report = {"exam": {"id": "e1", "seed": None, "cluster": "c", "started_at": "s", "ended_at": "e",
                       "ended_by": "finished", "duration_min": 10, "time_used_s": 60, "ckalab_version": "x"},
              "tasks": [task], "total": {"percent": 40.0, "pass_mark": 66.0, "passed": False, "weight": 5,
                                         "score": 2, "max_score": 5}}
    text = render.exam_report_text(report)
    assert "\x1b" not in text and "\x00" not in text
    assert text.splitlines()[-5:] == ["    ✔ [2/2] exists", "    ✘ [0/3] value", "        value is '\\x1b[2Jboom'",
                                      "    – [-] real traffic: not available on this backend",
                                      "        no pod traffic on this backend"]
    suite = ET.fromstring(render.exam_junit(report)).find("testsuite")
    assert suite.get("failures") == "1"
    assert suite.find("testcase[@name='real traffic']/skipped").get("message") == (
        "not available on this backend: no pod traffic on this backend")
    assert suite.find("testcase[@name='value']/failure").get("message") == "value is '\\x1b[2Jboom'"
    page = render.result_html(r) + render.exam_report_html(report)
    assert "\x1b" not in page and "\x00" not in page
    assert 'data-state="unavailable"' in render.result_html(r)
    assert "not available on this backend: no pod traffic on this backend" in render.result_html(r)
    assert "1 of 2 checks not passed yet, 1 not available on this backend" in render.result_html(r)
    exam_page = render.exam_report_html(report)  # the exam report lists checks like the lab bar
    assert 'data-state="unavailable"' in exam_page
    assert "not available on this backend: no pod traffic on this backend" in exam_page


# --- exports: Canvas, Moodle, per-check columns, Gradescope --------------------------------

CANVAS_EXPORT = (
    "Student,ID,SIS User ID,SIS Login ID,Section,Lab 5: rbac-role (4711),Quiz 1 (4712),Current Score\n"
    "    Points Possible,,,,,10,5,(read only)\n"
    '"One, Stu",101,,stu-1,Sec A,,5,50\n'
    '"Two, Stu",102,STU-2,,Sec A,,4,40\n'
    '"Else, Some",103,,someone,Sec B,7,3,30\n'
    '"Student, Test",104,,,Sec A,,,\n')


def test_results_does_not_import_exports():
    # exports is built on results; the other way round would be a cycle, and every verb that only
    # submits or grades would load the LMS formats.
    code = "import sys, ckalab.results; print('ckalab.exports' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_canvas_moodle_and_per_check_exports(bundles, key_file, tmp_path, capsys):
    template = tmp_path / "canvas-export.csv"
    template.write_text(CANVAS_EXPORT)
    out = tmp_path / "out"
    assert cli.main(["gradebook", str(bundles), "--key-file", str(key_file), "--out", str(out), "--per-check",
                     "--canvas-template", str(template), "--moodle", "email"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out / 'canvas.csv'}" in printed and f"wrote {out / 'moodle.csv'}" in printed
    assert "canvas:" not in printed   # every student matched, the only lab handed in has its column
    canvas = list(csv.reader(open(out / "canvas.csv")))
    # Only the identity columns and the matched lab column go back: Quiz 1 and read-only columns
    # are left alone; matched by SIS Login ID, by SIS User ID (case ignored); others stay blank.
    assert canvas == [["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "Lab 5: rbac-role (4711)"],
                      ["    Points Possible", "", "", "", "", "10"],
                      ["One, Stu", "101", "", "stu-1", "Sec A", "10"],
                      ["Two, Stu", "102", "STU-2", "", "Sec A", "0"],
                      ["Else, Some", "103", "", "someone", "Sec B", ""]]
    moodle = list(csv.DictReader(open(out / "moodle.csv")))
    assert [m["email"] for m in moodle] == ["stu-1", "stu-2"]
    assert (moodle[0]["rbac-role"], moodle[1]["rbac-role"]) == ("10", "0")
    assert "kubeconfig" not in moodle[0] and "kubeconfig/test_file_parses" not in moodle[0]   # nobody handed it in
    assert moodle[0]["rbac-role/test_role_exists"] == "2" and moodle[1]["rbac-role/test_role_exists"] == "0"
    book = rows(out / "gradebook.csv")
    assert book["(max)"]["rbac-role/test_role_exists"] == "2" and book["stu-1"]["rbac-role/test_role_rules"] == "3"
    assert list(book["stu-1"])[:2] == ["student", labs.lab_ids()[0]]   # the usual columns come first


def test_canvas_without_template_and_bad_templates(bundles, key_file, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(["gradebook", str(bundles), "--key-file", str(key_file), "--out", str(out), "--canvas"]) == 0
    canvas = list(csv.DictReader(open(out / "canvas.csv")))
    assert list(canvas[0])[:6] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section",
                                   f"ckalab {labs.lab_ids()[0]}"]
    assert canvas[0]["Student"] == "Points Possible" and canvas[0]["ckalab rbac-role"] == "10"
    assert (canvas[1]["SIS Login ID"], canvas[1]["ckalab rbac-role"]) == ("stu-1", "10")
    # A template without the lab's column, and a student it does not list: said, not guessed.
    t = tmp_path / "t.csv"
    t.write_text("Student,ID,SIS User ID,SIS Login ID,Section,Quiz 1 (4712)\n\"One, Stu\",101,,stu-1,A,5\n")
    assert cli.main(["gradebook", str(bundles), "--key-file", str(key_file), "--out", str(out),
                     "--canvas-template", str(t)]) == 0
    printed = capsys.readouterr().out
    assert "  canvas: no assignment column for rbac-role (name a Canvas assignment after the lab id, " \
           "e.g. 'rbac-role')" in printed
    assert "  canvas: student stu-2 is not in t.csv (no row with that SIS Login ID, SIS User ID or ID)" in printed
    for text, why in (("name,score\na,1\n", "does not look like a Canvas gradebook export"),
                      (b"\xff\xfe\x00", "Cannot read the Canvas export")):
        (t.write_bytes if isinstance(text, bytes) else t.write_text)(text)
        assert cli.main(["gradebook", str(bundles), "--key-file", str(key_file), "--out", str(out),
                         "--canvas-template", str(t)]) == 2
        assert why in capsys.readouterr().err
    assert cli.main(["gradebook", str(bundles), "--key-file", str(key_file), "--canvas-template",
                     str(tmp_path / "none.csv")]) == 2
    assert f"Cannot read the Canvas export {tmp_path / 'none.csv'}: No such file or directory" in capsys.readouterr().err


def test_gradescope_results_json(bundles, key_file, tmp_path, capsys):
    out = tmp_path / "results" / "results.json"
    assert cli.main(["gradescope-verify", str(bundles / "stu-1.json"), "--key-file", str(key_file),
                     "--out", str(out), "--labs", "rbac-role"]) == 0
    res = json.loads(out.read_text())
    assert res["score"] == 10 and res["visibility"] == "visible" and "stu-1" in res["output"]
    assert {t["status"] for t in res["tests"]} == {"passed"}
    first = res["tests"][0]
    assert first == {"name": "rbac-role: Role exists", "number": "1.1", "score": 2, "max_score": 2,
                     "status": "passed", "output": first["output"], "visibility": "visible"}
    assert sum(t["max_score"] for t in res["tests"]) == 10
    # An unsolved lab: failed tests carry the grader's own message; a lab the assignment counts
    # but the bundle lacks is a failed test worth the lab's maximum.
    sub = tmp_path / "submission"
    sub.mkdir()
    shutil.copy(bundles / "stu-2.json", sub / "upload.json")
    assert cli.main(["gradescope-verify", str(sub), "--key-file", str(key_file), "--out", str(out),
                     "--labs", "rbac-role", "kubeconfig"]) == 0
    res = json.loads(out.read_text())
    role = labs.load("rbac-role", "stu-2").params["role"]
    assert res["score"] == 0 and res["tests"][0]["status"] == "failed"
    assert res["tests"][0]["output"].startswith(f"Role '{role}' not found in namespace 'default'")
    assert res["tests"][-1] == {"name": "kubeconfig: handed in", "number": "2", "score": 0,
                                "max_score": results.Catalogue().full_max("kubeconfig"), "status": "failed",
                                "output": "The bundle has no result for kubeconfig: start it with 'ckalab start "
                                          "kubeconfig', then submit again.", "visibility": "visible"}
    # A bundle edited after signing, and one handed in by someone else: score 0 and the reason.
    b = json.loads((bundles / "stu-1.json").read_text())
    b["labs"][0]["score"] = 11
    (sub / "upload.json").write_text(json.dumps(b))
    assert cli.main(["gradescope-verify", str(sub), "--key-file", str(key_file), "--out", str(out)]) == 1
    res = json.loads(out.read_text())
    assert res["score"] == 0 and res["tests"] == [{
        "name": "Result bundle verifies", "number": "0", "score": 0, "max_score": 0, "status": "failed",
        "output": "bad signature (edited after signing, or signed with another course key)", "visibility": "visible"}]
    meta = tmp_path / "submission_metadata.json"
    meta.write_text(json.dumps({"users": [{"name": "Stu Two", "email": "stu-2@uni.example", "sid": "202"}]}))
    assert cli.main(["gradescope-verify", str(bundles / "stu-1.json"), "--key-file", str(key_file), "--out",
                     str(out), "--metadata", str(meta)]) == 1
    assert json.loads(out.read_text())["tests"][0]["output"] == (
        "the bundle is for student 'stu-1', not the submitter (202, stu-2@uni.example)")
    assert cli.main(["gradescope-verify", str(bundles / "stu-2.json"), "--key-file", str(key_file), "--out",
                     str(out), "--metadata", str(meta)]) == 0   # stu-2 is the local part of the email
    (sub / "second.json").write_text("{}")
    capsys.readouterr()
    assert cli.main(["gradescope-verify", str(sub), "--key-file", str(key_file), "--out", str(out)]) == 2
    assert capsys.readouterr().err == f"error: {sub} holds 2 .json files; upload exactly one result bundle.\n"
