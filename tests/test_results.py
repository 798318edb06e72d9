"""Result bundles from the learner's machine, and the instructor's gradebook that verifies them."""

from __future__ import annotations

import copy
import csv
import json
import shutil
import xml.etree.ElementTree as ET

import pytest

from ckalab import cli, labs, results
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
    assert b["format"] == "ckalab-result/v1" and b["student"] == "stu-1" and b["ckalab_version"]
    (e,) = b["labs"]
    assert e["lab"] == "rbac-role" and e["seed"] == "stu-1" and e["params"] == labs.load("rbac-role", "stu-1").params
    assert e["digest"] == labs.load("rbac-role").files_digest()
    assert e["score"] == e["max_score"] == 10 and e["passed"] and e["graded_at"] and e["duration_s"] > 0
    assert [c["id"] for c in e["checks"]][:2] == ["test_role_exists", "test_role_rules"]
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
    root = ET.parse(tmp_path / "out" / "gradebook.xml").getroot()
    stu2 = root.find("testsuite[@name='stu-2']")
    failure = stu2.find("testcase[@name='rbac-role']/failure")
    role = labs.load("rbac-role", "stu-2").params["role"]
    assert failure.get("message") == "0/10 points"
    assert failure.text.startswith(f"Role exists: Role '{role}' not found in namespace 'default'.")


def _resign(b, key_file):
    return results.sign(b, results.read_key(key_file))


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
    assert results.signature_ok(good, key)

    book = results.gradebook(bundles, key_file, tmp_path / "out")
    why = dict(book.rejected)
    assert why["a-edited.json"] == why["b-otherkey.json"] == why["k-nosig.json"] == (
        "bad signature (edited after signing, or signed with another course key)")
    assert why["c-rescored.json"] == "checks of 'rbac-role' do not match the course grader"
    assert why["d-faked.json"] == "score of 'rbac-role' does not add up from its checks"
    assert why["e-unknown.json"] == "unknown lab 'no-such-lab'"
    assert why["f-params.json"] == "parameters of 'rbac-role' do not match its seed"
    assert why["g-garbage.json"].startswith("malformed JSON (UnicodeDecodeError: ")
    assert why["h-truncated.json"].startswith("malformed JSON (JSONDecodeError: ")
    assert why["i-list.json"] == "malformed: not a ckalab result bundle (format 'ckalab-result/v1' expected)"
    assert why["j-dir.json"] == "malformed: not a file"
    assert set(book.rows) == {"stu-1", "stu-2"} and len(why) == 11
    errors = ET.parse(tmp_path / "out" / "gradebook.xml").getroot().findall(
        "testsuite[@name='rejected bundles']/testcase")
    assert len(errors) == 11
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
