"""Learner files are read with limits: each hostile file gets one clear message, fast."""

import os
import time

import pytest

from ckalab import learner_files as lf

BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\n" \
       "d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: [*e,*e,*e,*e,*e,*e,*e,*e,*e]\n"


def _fifo(p):
    os.mkfifo(p)


def _zero(p):
    os.symlink("/dev/zero", p)


def _dir(p):
    p.mkdir()


def _big(p):
    with open(p, "wb") as f:
        f.truncate(lf.MAX_BYTES + 1)


CASES = [
    ("alias-bomb", lambda p: p.write_text(BOMB), "answers.yaml uses YAML aliases (*name, line 2); write plain values instead."),
    ("fifo", _fifo, "answers.yaml is not a regular file (a pipe, device or socket)"),
    ("dev-zero", _zero, "answers.yaml is not a regular file (a pipe, device or socket)"),
    ("directory", _dir, "answers.yaml is a directory, not a file"),
    ("too-big", _big, f"answers.yaml is {lf.MAX_BYTES + 1:,} bytes, more than the {lf.MAX_BYTES:,}-byte limit"),
    ("not-utf8", lambda p: p.write_bytes(b"q1: \xff\xfe\n"), "answers.yaml is not UTF-8 text"),
    ("deep", lambda p: p.write_text("[" * 50000 + "]" * 50000), "answers.yaml is nested too deeply"),
    ("bad-yaml", lambda p: p.write_text("q1: [unclosed\n"), "answers.yaml is not valid YAML (line 2, column 1)"),
    ("missing", lambda p: None, "answers.yaml not found (looked for"),
]


@pytest.mark.parametrize("make,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hostile_file_gets_one_clear_message(tmp_path, make, message):
    p = tmp_path / "answers.yaml"
    make(p)
    t0 = time.monotonic()
    with pytest.raises(lf.LearnerFileError) as err:
        lf.load_yaml(p)
    assert message in str(err.value)
    assert time.monotonic() - t0 < 5


def test_plain_yaml_parses_once_and_callers_get_copies(tmp_path):
    p = tmp_path / "answers.yaml"
    p.write_text("q1: [a, b]\n")
    first = lf.load_yaml(p)
    first["q1"].append("c")
    assert lf.load_yaml(p) == {"q1": ["a", "b"]}
