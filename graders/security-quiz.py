"""Grader for security-quiz: one check per question in its data file, data/questions.yaml.

The questions are data. At import this module turns each one into a @check function with its
own name and title (pytest's parametrize would give every question the same title). Questions
about this cluster (`live:`) are graded against facts read from the cluster at grading time,
never against a stored key. The setup script imports this module too, to write the answers
template and the question sheet, so questions.yaml has exactly one reader. Variants differ in
the order of each question's choices (lab param `shuffle`, see questions_for): the sheet, the
template, the grading and the diagnoses all use the variant's order. A wrong answer's check says
what is wrong with it and where to look, never the right answer (that is in solution/solve.sh).
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import os
import posixpath
import random
import re
import shlex
import textwrap
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

import yaml

from ckalab import labs, learner_files, pki
from ckalab.grading import check, expect, fail, fixture

LAB_ID = "security-quiz"
QUESTIONS_FILE = labs.load(LAB_ID).data_file("questions")  # named in lab.yaml under data
LETTERS = "abcdefghijklmnopqrstuvwxyz"
QID = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")


# --- normalising answers: generous where the meaning is the same, strict where it differs ----

def _text(s) -> str:
    """Collapse whitespace; drop the quotes, backticks and final full stop learners paste around answers."""
    return " ".join(str(s).split()).strip("`'\" ").rstrip(".").strip()


def _words(s) -> str:
    """'AlwaysAllow' == 'always allow' == 'always-allow': names where only case and separators vary."""
    return re.sub(r"[\s_-]+", "", _text(s).lower())


def _items(s) -> list[str]:
    """A list answer written as 'a, b', 'a,b' or 'a b' (the names asked for contain no spaces)."""
    return [x for x in re.split(r"[,;\s]+", _text(s)) if x]


HOME = re.compile(r"^(\$HOME|\$\{HOME\}|~|/root|/home/[^/]+|/Users/[^/]+)(?=/|$)")


def _home_path(s):
    """A path in the home directory: $HOME, ${HOME}, ~ and a home written out (/root for the exam's
    root user, /home/NAME) all become ~; the rest must match exactly (case and dots count)."""
    t = _text(s)
    if not t:
        return None
    return posixpath.normpath(HOME.sub("~", t, count=1))


KUBECTL = {"kubectl", "k"}  # `k` is the alias the exam environment sets up for kubectl


def _kubectl(s):
    """A kubectl command as (program, positional words..., other flags sorted). `k` is kubectl,
    --kubeconfig (which file to edit) is dropped wherever it stands, a pasted prompt, backticks,
    quotes around the whole command and a KUBECONFIG=... prefix are ignored. None: not kubectl."""
    t = " ".join(str(s).split()).strip("`").strip()
    t = re.sub(r"^\$\s*", "", t).rstrip(".;").strip()
    try:
        words = shlex.split(t)
        if len(words) == 1 and " " in words[0]:  # the whole command in quotes
            words = shlex.split(words[0])
    except ValueError:  # an unclosed quote
        return None
    while words and re.fullmatch(r"KUBECONFIG=\S*", words[0]):
        words.pop(0)
    if not words or posixpath.basename(words[0]) not in KUBECTL:
        return None
    positional, flags, rest = [], [], iter(words[1:])
    for w in rest:
        if w == "--kubeconfig":
            if next(rest, None) is None:
                return None  # the flag without its file
        elif w.startswith("--kubeconfig="):
            continue
        elif w.startswith("-"):
            flags.append(w)
        else:
            positional.append(w)
    return ("kubectl", *positional, *sorted(flags))


def _version(s):
    m = re.fullmatch(r"(?:kubernetes\s*)?v?(\d+)\.(\d+)(?:\.0)?", _text(s).lower())
    return (int(m[1]), int(m[2])) if m else None


def _cidr(s):
    try:
        return frozenset(ipaddress.ip_network(x, strict=False) for x in _items(s))
    except ValueError:
        return None  # not a range at all: simply not the right answer


def _name(s):
    """A certificate CN: 'kubernetes' == 'CN = kubernetes' == 'issuer=CN=kubernetes, O=x' (openssl's
    output pasted); hyphens and dots still count."""
    t = _text(s)
    m = re.search(r"\bCN\s*=\s*([^,/]+)", t, flags=re.I)
    return " ".join((m[1] if m else t).lower().split())


def _set(s):
    items = _items(s)
    return frozenset() if [i.lower() for i in items] in (["none"], ["-"]) else frozenset(map(_words, items))


COMPARE = {
    "words": _words,
    "exact": _text,  # paths and image references: case and punctuation matter
    "home-path": _home_path,
    "kubectl": _kubectl,
    "version": _version,
    "cidr": _cidr,
    "ordered": lambda s: tuple(map(_words, _items(s))),  # authorizers: order matters
    "set": _set,  # admission plugins: order does not
    "name": _name,
}
LIST_COMPARES = {"cidr", "ordered", "set"}


# --- facts about this cluster -----------------------------------------------------------------

@dataclass
class Fact:
    value: str  # the right answer, as the learner would write it (never shown: the check diagnoses)
    source: str  # the file it comes from, for the question's `look`
    # answer (as written) -> why it is not this cluster's; called only for a wrong answer (on kind
    # every file read is a docker exec, so the diagnoses cost nothing while answers are right)
    known: Callable[[], dict] = dict


def _manifest(cluster) -> str:
    return f"{PurePosixPath(cluster.pki_dir).parent}/manifests/kube-apiserver.yaml"


def _fact_authorization_modes(cluster, flags) -> Fact:
    if flags.get("authorization-mode"):
        return Fact(flags["authorization-mode"], _manifest(cluster),
                    lambda: {"AlwaysAllow": "That is the built-in default, but this cluster sets the flag."})
    if flags.get("authorization-config"):
        cfg = yaml.safe_load(cluster.read_file(flags["authorization-config"])) or {}
        modes = ",".join(a.get("type", "?") for a in cfg.get("authorizers") or [])
        return Fact(modes, flags["authorization-config"])
    return Fact("AlwaysAllow", _manifest(cluster))


# The usual defaults a learner may remember instead of reading this cluster's flag.
CIDR_DEFAULTS = {"10.0.0.0/24": "kube-apiserver's built-in default", "10.96.0.0/12": "kubeadm's default"}


def _fact_service_cidr(cluster, flags) -> Fact:
    value = flags.get("service-cluster-ip-range") or "10.0.0.0/24"
    return Fact(value, _manifest(cluster), lambda: {
        c: f"That is {what}, but this cluster's API server sets its own range."
        for c, what in CIDR_DEFAULTS.items() if _cidr(c) != _cidr(value)})


def _fact_apiserver_issuer_cn(cluster, flags) -> Fact:
    path = flags.get("tls-cert-file") or f"{cluster.pki_dir}/apiserver.crt"
    info = pki.describe(pki.load_cert(cluster.read_file(path)))

    def known() -> dict:
        out = {info.subject_cn: "That is the certificate's own subject (who it identifies), not who signed it."}
        for rel in ("etcd/ca.crt", "front-proxy-ca.crt"):  # the other CAs of a kubeadm PKI
            try:
                cn = pki.describe(pki.load_cert(cluster.read_file(f"{cluster.pki_dir}/{rel}"))).subject_cn
            except Exception:  # noqa: BLE001 - a missing or odd file only means no diagnosis for it
                continue
            out.setdefault(cn, f"That is the CA in {rel}, which signs other certificates than this one.")
        out.pop(info.issuer_cn, None)
        return out
    return Fact(info.issuer_cn, path, known)


def _fact_admission_plugins(cluster, flags) -> Fact:
    return Fact(flags.get("enable-admission-plugins") or "none", _manifest(cluster))


LIVE = {
    "authorization-modes": _fact_authorization_modes,
    "service-cidr": _fact_service_cidr,
    "apiserver-issuer-cn": _fact_apiserver_issuer_cn,
    "admission-plugins": _fact_admission_plugins,
}


# --- the questions ----------------------------------------------------------------------------

def load_questions(path: Path = QUESTIONS_FILE) -> list[dict]:
    """Read and check questions.yaml; a mistake in it is the lab author's, so say exactly where."""
    qs = yaml.safe_load(path.read_text())
    problems, seen = [], set()
    for n, q in enumerate(qs if isinstance(qs, list) else [], 1):
        where = f"question {n} ({q.get('id')})" if isinstance(q, dict) else f"question {n}"
        if not isinstance(q, dict):
            problems.append(f"{where} is not a mapping")
            continue
        missing = {"id", "title", "type", "text", "points"} - set(q)
        if missing:
            problems.append(f"{where} lacks {', '.join(sorted(missing))}")
            continue
        if not QID.match(str(q["id"])) or q["id"] in seen:
            problems.append(f"{where}: id must be unique lowercase words joined by '-'")
        seen.add(q["id"])
        choices = q.get("choices") or []
        if q["type"] in ("choice", "multi"):
            answer = q.get("answer")
            wanted = [answer] if q["type"] == "choice" else answer
            if not choices or not isinstance(wanted, list) or not wanted or \
                    any(a not in LETTERS[:len(choices)] for a in wanted):
                problems.append(f"{where}: needs choices and an answer among their letters")
                continue
            wrong = q.get("wrong") or {}
            if not isinstance(wrong, dict) or set(wrong) != set(LETTERS[:len(choices)]) - set(wanted):
                problems.append(f"{where}: wrong must say why each choice that is not an answer is wrong")
                continue
            # Reasons side by side with the choices, so that a shuffle moves both together.
            q["why"] = [" ".join(str(wrong.get(x) or "").split()) for x in LETTERS[:len(choices)]]
        elif q["type"] == "short":
            if ("accept" in q) == ("live" in q) or q.get("compare", "words") not in COMPARE:
                problems.append(f"{where}: needs either accept or live, and compare one of {', '.join(COMPARE)}")
            elif "live" in q and q["live"] not in LIVE:
                problems.append(f"{where}: live must be one of {', '.join(LIVE)}")
            elif not isinstance(q.get("wrong") or [], list) or any(
                    not isinstance(w, dict) or not isinstance(w.get("answers"), list) or not w.get("why")
                    for w in q.get("wrong") or []):
                problems.append(f"{where}: wrong must be a list of {{answers: [...], why: ...}}")
        else:
            problems.append(f"{where}: type must be choice, multi or short")
    if not isinstance(qs, list) or not qs:
        problems.append("expected a list of questions")
    if problems:
        raise ValueError(f"{path} has problems: " + "; ".join(problems))
    return qs


QUESTIONS = load_questions()


# --- variants: the lab param `shuffle` orders each question's choices --------------------------

def _shuffled(q: dict, rng: random.Random) -> dict:
    """The question with its choices in a random order and its answer letters moved along."""
    if not q.get("choices"):
        return q
    order = list(range(len(q["choices"])))
    rng.shuffle(order)  # order[new position] = position in questions.yaml
    moved = {LETTERS[old]: LETTERS[new] for new, old in enumerate(order)}
    answer = moved[q["answer"]] if q["type"] == "choice" else sorted(moved[a] for a in q["answer"])
    return q | {"choices": [q["choices"][i] for i in order], "why": [q["why"][i] for i in order], "answer": answer}


@functools.lru_cache
def questions_for(shuffle: int) -> list[dict]:
    """This variant's questions. 0 keeps questions.yaml's order; any other value permutes every
    question's choices reproducibly, and always moves at least one right answer, so the canonical
    answer key never solves a shuffled variant."""
    if not shuffle:
        return QUESTIONS
    key = [q.get("answer") for q in QUESTIONS]
    for attempt in range(100):  # a repeat of the canonical key is rare (about 1 in 5000)
        qs = [_shuffled(q, random.Random(f"{shuffle}/{attempt}/{q['id']}")) for q in QUESTIONS]
        if [q.get("answer") for q in qs] != key:
            return qs
    raise AssertionError(f"shuffle {shuffle} found no order that moves an answer")  # cannot happen


def letter_of(shuffle: int, qid: str, text: str) -> str:
    """The letter under which this variant shows the choice `text` of question `qid`."""
    q = next(q for q in questions_for(shuffle) if q["id"] == qid)
    return LETTERS[[_words(c) for c in q["choices"]].index(_words(text))]


def check_id(q: dict) -> str:
    return "test_" + q["id"].replace("-", "_")


# --- the learner's answers file ---------------------------------------------------------------

class WrongType(Exception):
    """An answer that YAML read as a mapping or a nested list instead of text."""


@dataclass
class Answers:
    path: Path
    data: dict = field(default_factory=dict)
    error: str | None = None

    def unknown_keys(self) -> list[str]:
        ids = {q["id"] for q in QUESTIONS}
        return [k for k in self.data if k not in ids]


FORMAT = "one line per question: 'question-id: answer'"


def read_answers(path: Path) -> Answers:
    """Parse the answers file; every way it can be broken becomes a message, never an exception."""
    a = Answers(path)
    try:
        raw = learner_files.read_bytes(path, name=str(path))
    except learner_files.LearnerFileError as exc:  # a directory, a pipe, too large, unreadable
        a.error = str(exc) if path.exists() else (
            f"{path} does not exist. Run 'ckalab start {LAB_ID}' to get a template with every question, then "
            "write your answers in it.")
        return a
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:  # NUL is valid UTF-8 but never part of a text file
        a.error = f"{path} is not UTF-8 text (it holds binary data or another encoding). Write it as plain YAML, {FORMAT}."
        return a
    try:
        # BaseLoader keeps every scalar as the text the learner typed: 1.20 stays "1.20" (not the
        # float 1.2) and yes/no/on/off stay words (not booleans).
        data = learner_files.parse_yaml(text, str(path), plain=True)
    except learner_files.LearnerFileError as exc:
        a.error = str(exc)
        return a
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(exc, "problem", None) or "it does not parse"
        a.error = (f"{path} is not valid YAML: {problem}{where}. Write {FORMAT}; put quotes around an "
                   "answer that contains ': ' or ' #' or starts with one of { [ * & ! | > ' \" % @ `.")
        return a
    if data is None:
        a.error = f"{path} is empty. Write {FORMAT} (run 'ckalab reset {LAB_ID}' after deleting it for a template)."
    elif not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else "a single line of text"
        a.error = f"{path} holds {kind}, not a mapping of question ids to answers. Write {FORMAT}."
    else:
        a.data = data
    return a


def _as_text(value, allow_list: bool) -> str:
    """The answer as text. Lists are joined (for list questions) or must hold a single item."""
    if isinstance(value, dict):
        raise WrongType("a mapping (key: value pairs; put quotes around an answer that contains ': ')")
    if isinstance(value, list):
        if any(not isinstance(v, str) for v in value):
            raise WrongType("a list that holds lists or mappings")
        if len(value) != 1 and not allow_list:
            raise WrongType(f"a list of {len(value)} items")
        return ", ".join(value)
    return str(value)


# --- grading one question ---------------------------------------------------------------------

def _placeholders(text: str, values: dict[str, str]) -> str:
    for k, v in values.items():
        text = text.replace("{" + k + "}", v)
    return " ".join(text.split())


def grade(n: int, q: dict, answers: Answers, cluster, facts: dict) -> None:
    """Fail with a learner-facing message unless the answer to question n is right."""
    __tracebackhide__ = True  # pytest formats a traceback per failure: keep it short, keep check fast
    qid, label = q["id"], f"Question {n} ({q['id']})"
    value = answers.data.get(qid)
    if value is None or value == [] or (isinstance(value, str) and not _text(value)):
        close = difflib.get_close_matches(qid, answers.unknown_keys(), n=1, cutoff=0.6)
        also = f" ({answers.path.name} has the key '{close[0]}': did you mean '{qid}'?)" if close else ""
        fail(f"{label} is not answered: write your answer after '{qid}:' in {answers.path.name}.{also}")
    multi = q["type"] == "multi" or q.get("compare") in LIST_COMPARES
    try:
        given = _as_text(value, allow_list=multi)
    except WrongType as exc:
        wants = {"choice": "one letter, like: b", "multi": "a list of letters, like: [a, c]"}.get(
            q["type"], "a comma-separated list" if multi else "text")
        fail(f"{label}: your answer is {exc}, but this question wants {wants}.")
    shown = " ".join(given.split())
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    etc = str(PurePosixPath(cluster.pki_dir).parent)
    values = {"manifests": f"{etc}/manifests", "pki": cluster.pki_dir}

    if q["type"] in ("choice", "multi"):
        choices = q["choices"]
        letters = LETTERS[:len(choices)]
        parts = [given] if q["type"] == "choice" else [p for p in re.split(r"\s*[,;]\s*", _text(given)) if p]
        if len(parts) == 1 and re.fullmatch(r"([a-z]\s+)+[a-z]", parts[0], re.I):
            parts = parts[0].split()  # "a c e": letters separated by spaces only
        picked, unclear = set(), []
        for part in parts:
            letter = _choice_letter(part, choices)
            (picked.add(letter) if letter else unclear.append(part))
        expect(not unclear, f"{label}: {', '.join(repr(u) for u in unclear)} "
               f"{'is' if len(unclear) == 1 else 'are'} not one of the choices: "
               f"answer with {'a letter' if q['type'] == 'choice' else 'letters'} from "
               f"{letters[0]} to {letters[-1]} (or the text of a choice).")
        right = {q["answer"]} if q["type"] == "choice" else set(q["answer"])
        if picked == right:
            return
        diagnosis = _choice_diagnosis(q, picked, right)
    else:
        compare = q.get("compare", "words")
        norm = COMPARE[compare]
        if "live" in q:
            fact = _fact(q["live"], cluster, facts)
            given = FLAG_LINE.sub("", _text(given))  # the manifest's line pasted: its value counts
            got = norm(given)
            if got is not None and got == norm(fact.value):
                return
            values["source"] = fact.source
            look = f"Look: {_placeholders(q['look'], values)}" if q.get("look") else ""
            diagnosis = " ".join(x for x in (_live_diagnosis(compare, given, got, fact), look) if x)
        else:
            got = norm(given)
            if got is not None and got in {norm(a) for a in q["accept"]}:
                return
            diagnosis = _short_diagnosis(q, compare, got)
    fail(f"{label}: '{shown}' is not correct. {diagnosis}".rstrip())


# "- --service-cluster-ip-range=", as grep shows a line of a static Pod manifest
FLAG_LINE = re.compile(r"^(-\s+)?--[a-z0-9-]+=")


# What an answer that does not even read as the kind of answer asked for gets told.
UNREADABLE = {
    "version": "That is not a version; write it like 1.23.",
    "cidr": "That is not an IP range; write it in CIDR notation, like 10.0.0.0/16.",
    "kubectl": "That does not read as one kubectl command (start it with kubectl, or its alias k; close every quote).",
}


def _choice_diagnosis(q: dict, picked: set, right: set) -> str:
    """Why each picked choice that is not right is wrong, and how many right ones are missing;
    never which ones are right."""
    out = [q["why"][LETTERS.index(x)] if q["type"] == "choice"
           else f"{x}) {q['choices'][LETTERS.index(x)].rstrip('.')}: {q['why'][LETTERS.index(x)]}"
           for x in sorted(picked - right)]
    missing = len(right - picked)
    if missing and q["type"] == "multi":
        out.append(f"{missing} right {'choice is' if missing == 1 else 'choices are'} missing.")
    return " ".join(out)


def _short_diagnosis(q: dict, compare: str, got) -> str:
    """The `wrong` entry this answer matches (for kubectl: a command it starts with), if any."""
    if got is None:
        return UNREADABLE.get(compare, "")
    norm = COMPARE[compare]
    for entry in q.get("wrong") or []:
        for a in entry["answers"]:
            w = norm(a)
            if w == got or (compare == "kubectl" and w and got[:len(w)] == w):
                return " ".join(entry["why"].split())
    return ""


def _live_diagnosis(compare: str, given: str, got, fact: Fact) -> str:
    """What is wrong with an answer about this cluster, by comparing it with the fact (which is
    not shown: the question's `look` says where to read it)."""
    if got is None:
        return UNREADABLE.get(compare, "")
    norm = COMPARE[compare]
    for known, why in fact.known().items():
        if norm(known) == got:
            return why
    if compare in ("ordered", "set"):
        mine, want = _items(given), _items(fact.value)
        if compare == "set" and not norm(given):
            return "This cluster does enable some explicitly."
        if compare == "ordered" and sorted(map(_words, mine)) == sorted(map(_words, want)):
            return "These are the right ones, but not in the order the API server asks them."
        extra = [x for x in mine if _words(x) not in set(map(_words, want))]
        missing = len(set(map(_words, want)) - set(map(_words, mine)))
        out = [f"{', '.join(extra)} {'is' if len(extra) == 1 else 'are'} not in this cluster's flag."] if extra else []
        if missing:
            out.append(f"{missing} {'is' if missing == 1 else 'are'} missing.")
        return " ".join(out)
    if compare == "cidr" and any(a.version == b.version and a.overlaps(b) for a in got for b in norm(fact.value)):
        return "That overlaps this cluster's range but is not the same range (check the prefix length)."
    return ""


def _choice_letter(part: str, choices: list[str]) -> str | None:
    """'b', 'B', '(b)', 'b)' or the choice's text (optionally after its letter) -> 'b'."""
    letters = LETTERS[:len(choices)]
    t = _text(part).lower()
    m = re.fullmatch(r"\(?([a-z])\s*[).:]?", t)
    if m:
        return m[1] if m[1] in letters else None
    m = re.fullmatch(r"\(?([a-z])\s*[).:]\s*(.+)", t)
    if m and m[1] in letters and _words(m[2]) == _words(choices[letters.index(m[1])]):
        return m[1]
    return next((letters[i] for i, c in enumerate(choices) if _words(c) == _words(t)), None)


def _fact(name: str, cluster, facts: dict) -> Fact:
    """Read the API server's flags once per grading run (on kind each read is a docker exec)."""
    if "flags" not in facts:
        facts["flags"] = cluster.component_flags("kube-apiserver")
    if name not in facts:
        facts[name] = LIVE[name](cluster, facts["flags"])
    return facts[name]


# --- fixtures and checks ----------------------------------------------------------------------

@fixture(scope="module")
def answers(lab) -> Answers:
    return read_answers(Path(lab.workdir) / lab.params["answers_file"])


@fixture(scope="module")
def quiz(lab) -> list[dict]:
    """The questions as this variant shows them (choice order per the `shuffle` param)."""
    return questions_for(int(lab.params.get("shuffle") or 0))


@fixture(scope="module")
def facts() -> dict:
    """Cluster facts, read once per grading run and only when a live question asks."""
    return {}


@check(1, "the answers file can be read", hint="ckalab start security-quiz writes a template to fill in")
def test_answers_file(answers):
    expect(answers.error is None, answers.error)


def _make_check(n: int, q: dict):
    @check(q["points"], f"Q{n}: {q['title']}", hint=q.get("hint", ""), after="test_answers_file")
    def test(answers, quiz, cluster, facts):
        __tracebackhide__ = True
        grade(n, quiz[n - 1], answers, cluster, facts)
    test.__name__ = test.__qualname__ = check_id(q)
    return test


for _n, _q in enumerate(QUESTIONS, 1):
    globals()[check_id(_q)] = _make_check(_n, _q)
del _n, _q


# --- the files `ckalab start` writes (called by the setup script) ------------------------------

HEADER = f"""\
Security quiz: write each answer after its question id, then run: ckalab check {LAB_ID}
  choice:       one letter, e.g.    some-question: b      (the text of the choice works too)
  choose all:   a list of letters   some-question: [a, c]
  short answer: text                some-question: my answer
                a list of names     some-question: first,second
Quote an answer that contains ': ' or ' #' or starts with {{ [ * & ! | > ' " % @ `
Questions about THIS cluster: its control-plane files are in ETC/manifests and ETC/pki"""


def _header(etc: str) -> str:
    # On kind the control plane's files are inside the node's container, not on this machine.
    where = "." if Path(etc).is_dir() else ",\ninside the control-plane node (kind: docker exec -it <cluster>-control-plane bash)."
    return HEADER.replace("ETC", etc) + where


def _question_lines(n: int, q: dict) -> list[str]:
    kind = {"choice": "choose one", "multi": "choose all that apply"}.get(q["type"], "short answer")
    indent = " " * len(f"{n}. ")
    lines = textwrap.wrap(f"{n}. {' '.join(q['text'].split())} ({kind}, {q['points']} points)", 92,
                          subsequent_indent=indent, break_on_hyphens=False)
    lines += [f"{indent}{LETTERS[i]}) {c}" for i, c in enumerate(q.get("choices") or [])]
    return lines


def render_template(etc: str, shuffle: int = 0) -> str:
    out = [f"# {line}".rstrip() for line in _header(etc).splitlines()]
    for n, q in enumerate(questions_for(shuffle), 1):
        out += ["", *[f"# {line}" for line in _question_lines(n, q)], f"{q['id']}:"]
    return "\n".join(out) + "\n"


def render_sheet(etc: str, answers_file: str, shuffle: int = 0) -> str:
    out = ["# Security quiz", "", f"Write your answers in `{answers_file}`, next to this file.", "", "```",
           _header(etc), "```"]
    for n, q in enumerate(questions_for(shuffle), 1):
        kind = {"choice": "choose one", "multi": "choose all that apply"}.get(q["type"], "short answer")
        out += ["", f"**{n}.** {' '.join(q['text'].split())} ({kind}, {q['points']} points; "
                f"answer key `{q['id']}`)"]
        if q.get("choices"):
            out += ["", *[f"- {LETTERS[i]}) {c}" for i, c in enumerate(q["choices"])]]
    return "\n".join(out).rstrip() + "\n"


def write_workdir_files(answers_file: str, shuffle: int = 0) -> None:
    """questions.md is ours and always refreshed; the answers file is written only if absent."""
    workdir = Path(os.environ.get("CKALAB_WORKDIR") or ".")
    etc = str(PurePosixPath(os.environ.get("CKALAB_PKI_DIR", "/etc/kubernetes/pki")).parent)
    (workdir / "questions.md").write_text(render_sheet(etc, answers_file, shuffle))
    try:
        with open(workdir / answers_file, "x") as f:  # "x": never replace the learner's file
            f.write(render_template(etc, shuffle))
    except FileExistsError:
        pass
