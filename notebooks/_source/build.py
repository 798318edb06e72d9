"""Build notebooks/NN-<name>.ipynb from the plain-text sources next to this file.

Why a generator: the concept text is easier to review and diff as text, and every lab notebook
gets exactly the same lab-bar and task cells (so the tests and the browser test can rely on
them). The output is committed without outputs or execution counts, with stable cell ids.

Source format (NN-<name>.md): lines starting with `%% md` or `%% code` open a Markdown or code
cell; `%% bar` inserts the lab bar cell and `%% task` the task/work/check section for the lab
named in the file name (NN-<lab-id>.md). Concept-only notebooks simply use neither; so does
exam.md (the mock exam notebook, exam.ipynb).

    python notebooks/_source/build.py          # write the notebooks
    python notebooks/_source/build.py --check  # exit 1 if a committed notebook is stale
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

SRC = Path(__file__).resolve().parent
OUT = SRC.parent
MARK = re.compile(r"^%% (md|code|bar|task)\s*$")


def bar_cells(lab_id: str) -> list[tuple[str, str]]:
    return [("code", f'''# The lab bar. This cell also points `!kubectl` at the lab cluster (its admin kubeconfig)
# and moves the kernel into the lab's work directory, like the exam terminal.
from ckalab.widgets import LabBar

bar = LabBar("{lab_id}")
bar''')]


def task_cells(lab_id: str) -> list[tuple[str, str]]:
    return [
        ("md", """## Your task

Press **Start** in the lab bar, or run the next cell. It creates what the task needs and shows the
task. Names in the task can change between variants (`CKALAB_SEED`), so read them from there."""),
        ("code", "workdir = bar.start()"),
        ("md", """Work in the empty cells below: `!kubectl ...` lines, `%%bash` cells, or `%%writefile name.yaml`
to write a manifest into the work directory. A JupyterLab terminal works too after
`eval "$(ckalab env)"; cd "$(ckalab workdir """ + lab_id + """)"`."""),
        ("code", "# Your commands here, e.g.\n# !kubectl get all -n default"),
        ("code", "# More room for your work"),
        ("code", """# Solution mode only (CKALAB_NOTEBOOK_MODE=solution): apply the reference solution here
# in place of the cells above. In normal mode this does nothing.
bar.autosolve()"""),
        ("md", """## Check

Press **Check** in the bar or run the cell below. Each check shows ✔ or ✘, its points, and for a
✘ what was expected and a command to look. **Hint** reveals one more hint per click; **Reset**
(after a confirmation) removes the lab's objects and sets it up again. The reference solution is
in the collapsed section of the bar: open it only after you tried."""),
        ("code", "result = bar.check()"),
    ]


def parse(path: Path) -> list[tuple[str, str]]:
    lab_id = path.stem.split("-", 1)[-1]  # only %% bar and %% task use it (NN-<lab-id>.md)
    cells: list[tuple[str, list[str]]] = []
    for line in path.read_text().splitlines():
        m = MARK.match(line)
        if m and m.group(1) == "bar":
            cells += [(k, [t]) for k, t in bar_cells(lab_id)]
        elif m and m.group(1) == "task":
            cells += [(k, [t]) for k, t in task_cells(lab_id)]
        elif m:
            cells.append((m.group(1), []))
        elif cells:
            cells[-1][1].append(line)
        elif line.strip():
            raise SystemExit(f"{path}: text before the first %% marker")
    return [(kind, "\n".join(lines).strip("\n")) for kind, lines in cells]


def build(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"},
                   "language_info": {"name": "python"}}
    for i, (kind, text) in enumerate(parse(path)):
        cell = nbformat.v4.new_markdown_cell(text) if kind == "md" else nbformat.v4.new_code_cell(text)
        cell.id = f"c{i:02d}"
        nb.cells.append(cell)
    return nb


def render(path: Path) -> str:
    return nbformat.writes(build(path)) + "\n"


def main(argv: list[str]) -> int:
    stale = []
    for src in [*sorted(SRC.glob("[0-9][0-9]-*.md")), SRC / "exam.md"]:
        target = OUT / f"{src.stem}.ipynb"
        text = render(src)
        if "--check" in argv:
            if not target.is_file() or target.read_text() != text:
                stale.append(target)
        else:
            target.write_text(text)
    for t in stale:
        print(f"{t} is out of date with {SRC / (t.stem + '.md')}: run python notebooks/_source/build.py")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
