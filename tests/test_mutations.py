"""Every grader against systematic wrong answers (mutations of the reference solution) and
correct answers in other forms (alternatives): tables in tests/mutations/<lab-id>.yaml."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from ckalab import labs, results
from conftest import check_of

TABLES = Path(__file__).parent / "mutations"
MIN_MUTATIONS, MIN_ALTERNATIVES = 12, 3
KEYS = {"id", "why", "from", "files", "apply", "run", "cleanup", "fails", "says", "seed"}


def _table(lab_id: str) -> dict:
    path = TABLES / f"{lab_id}.yaml"
    return yaml.safe_load(path.read_text()) if path.exists() else {}


def _cases() -> list:
    out = []
    for lab_id in labs.lab_ids():
        table = _table(lab_id)
        for kind in ("mutations", "alternatives"):
            for case in table.get(kind) or []:
                out.append(pytest.param(lab_id, kind, case, id=f"{lab_id}:{kind[:-1]}:{case.get('id')}"))
    return out


def test_tables_are_complete():
    """Each lab: >= 12 mutations and >= 3 alternatives, unique ids, known keys, real check ids."""
    problems = []
    for lab_id in labs.lab_ids():
        table = _table(lab_id)
        if table.get("elsewhere"):  # cases that need the live control plane: in the lab's module
            problems += _elsewhere_problems(lab_id, Path(__file__).parent.parent / table["elsewhere"])
            continue
        muts, alts = table.get("mutations") or [], table.get("alternatives") or []
        if len(muts) < MIN_MUTATIONS or len(alts) < MIN_ALTERNATIVES:
            problems.append(f"{lab_id}: {len(muts)} mutations, {len(alts)} alternatives")
        ids = [c.get("id") for c in muts + alts]
        if len(ids) != len(set(ids)):
            problems.append(f"{lab_id}: duplicate ids")
        checks = results.Catalogue().checks(lab_id)
        for c in muts + alts:
            if set(c) - KEYS:
                problems.append(f"{lab_id}:{c.get('id')}: unknown keys {sorted(set(c) - KEYS)}")
            if not c.get("why"):
                problems.append(f"{lab_id}:{c.get('id')}: no 'why'")
        for c in muts:
            if not c.get("says") or c.get("fails") not in checks:
                problems.append(f"{lab_id}:{c.get('id')}: 'fails' must name a check of the grader, with 'says'")
    assert not problems, "\n".join(problems)


def _elsewhere_problems(lab_id: str, module: Path) -> list[str]:
    """A lab module holding its own cases: a MUTATIONS table of at least MIN_MUTATIONS wrong
    answers and at least MIN_ALTERNATIVES `test_..._passes` alternatives."""
    import ast

    if not module.is_file():
        return [f"{lab_id}: its cases should be in {module}, which does not exist"]
    tree = ast.parse(module.read_text())
    muts = next((len(n.value.keys) for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.value, ast.Dict)
                 and any(isinstance(t, ast.Name) and t.id == "MUTATIONS" for t in n.targets)), 0)
    alts = sum(1 for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")
               and n.name.endswith("_passes"))
    if muts < MIN_MUTATIONS or alts < MIN_ALTERNATIVES:
        return [f"{lab_id}: {module.name} has {muts} MUTATIONS and {alts} test_..._passes alternatives"]
    return []


@pytest.mark.parametrize("lab_id,kind,case", _cases())
def test_case(lab_harness, cleanup, lab_id, kind, case):
    h = lab_harness(lab_id, case.get("seed"))
    cleanup.extend(shlex.split(h.lab.render(x)) for x in case.get("cleanup") or [])
    if case.get("from") == "solution":
        h.solve()
    for name, content in (case.get("files") or {}).items():
        h.write(name, h.lab.render(content))
    if case.get("apply"):
        h.apply(case["apply"])
    if case.get("run"):
        h.sh(h.lab.render(case["run"]))
    r = h.grade()
    if kind == "alternatives":
        assert r.passed, f"{case['why']}\n{r.render()}"
        return
    c = check_of(r, case["fails"])
    assert not c.passed, f"{case['why']}: {case['fails']} passed\n{r.render()}"
    says = h.lab.render(case["says"])
    assert says in c.message, f"{case['why']}: expected {says!r} in the message\n{r.render()}"
