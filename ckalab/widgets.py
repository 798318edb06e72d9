"""The lab bar: Start / Check / Hint / Reset buttons and the reference solution, for a notebook.

It is deliberately thin: every button calls the same library function as the CLI verb
(labs.start, grading.run, labs.next_hint, labs.reset, labs.solve), so a notebook and
`ckalab check` can never disagree. Every action is also a method (bar.start(), bar.check(), ...)
so a headless run (nbclient, CI) drives the same code as a click.

Errors never escape as bare tracebacks into the learner's face: CkalabError (which includes
ClusterNotRunning) carries a message that says what to do, and is shown as such; anything else
is shown with its type and text inside the bar's output area.
"""

from __future__ import annotations

import functools
import html
import os
import traceback

import ipywidgets as w
from IPython.display import HTML, Markdown, display

from . import exam, grading, labs
from . import notebook as nb
from .errors import CkalabError, ClusterNotRunning
from .grading import GradeResult


def _friendly(fn):
    """Show a CkalabError's message (e.g. 'cluster not running: run ckalab up') and return None."""
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except CkalabError as exc:
            self._refresh_status()
            text = str(exc)
            if isinstance(exc, ClusterNotRunning):  # add the exact command, with --name if needed
                text += "\n" + nb.status_line(self.cluster)[0]
            display(HTML(nb.message_html(text, "error")))
            return None
    return wrapper


class LabBar:
    """`bar = LabBar("rbac-role"); bar` shows the bar; `bar.check()` grades from code."""

    def __init__(self, lab_id: str, seed: str | None = None):
        self.lab, self.cluster = nb.use_lab(lab_id, seed)
        self.last_result: GradeResult | None = None
        self.out = w.Output(layout=w.Layout(border="1px solid #d0d7de", padding="4px", min_height="2em"))
        self.out.add_class("ckalab-out")
        self.status = w.HTML()
        self.buttons = {
            "start": w.Button(description="Start", icon="play", button_style="primary",
                              tooltip="Set up the lab and show the task"),
            "check": w.Button(description="Check", icon="check", button_style="success",
                              tooltip="Grade your work on the live cluster"),
            "hint": w.Button(description="Hint", icon="lightbulb-o", tooltip="Show one more hint"),
            "reset": w.Button(description="Reset", icon="undo", button_style="warning",
                              tooltip="Remove the lab's objects and set it up again (asks first)"),
        }
        for name, action in (("start", self.start), ("check", self.check), ("hint", self.hint),
                             ("reset", self._ask_reset)):
            self.buttons[name].on_click(functools.partial(self._click, action))
            self.buttons[name].add_class(f"ckalab-btn-{name}")
        yes = w.Button(description="Yes, reset", button_style="danger")
        no = w.Button(description="Cancel")
        yes.add_class("ckalab-reset-yes")
        yes.on_click(functools.partial(self._click, self._confirmed_reset))
        no.on_click(lambda _: self._hide_confirm())
        self.confirm = w.HBox([w.HTML(self._reset_warning()), yes, no], layout=w.Layout(display="none"))
        self.solution = self._solution_accordion()
        title = (f"<b>Lab {self.lab.order:02d} · {html.escape(self.lab.id)}</b>: {html.escape(self.lab.title)}"
                 + (f" <i>(variant {html.escape(str(self.lab.seed))})</i>" if self.lab.seed else ""))
        self.widget = w.VBox([w.HTML(title), self.status, w.HBox(list(self.buttons.values())),
                              self.confirm, self.out, self.solution])
        self.widget.add_class("ckalab-bar")
        self._refresh_status()

    def _ipython_display_(self):
        display(self.widget)

    # --- actions (callable from code; the buttons call the same methods) ---------------------

    @_friendly
    def start(self):
        workdir = labs.start(self.lab, self.cluster)
        os.chdir(workdir)
        self._refresh_status()
        display(HTML(nb.message_html(f"Lab '{self.lab.id}' is set up. Work directory: {workdir}\n"
                                     "Cells in this notebook run there, with the lab cluster's kubeconfig.", "ok")))
        if note := labs.backend_note(self.lab, self.cluster.backend):
            display(HTML(nb.message_html(note, "info")))
        self.show_task()
        return workdir

    @_friendly
    def check(self) -> GradeResult | None:
        exam.guard_practice(self.lab.id)  # no feedback on a running mock exam's tasks
        result = grading.run(self.lab, self.cluster)
        self.last_result = result
        nb.record(result)
        display(HTML(nb.result_html(result)))
        return result

    @_friendly
    def hint(self) -> str | None:
        exam.guard_practice(self.lab.id)  # no feedback on a running mock exam's tasks
        n, text = labs.next_hint(self.lab)
        display(HTML(nb.message_html(f"Hint {n}/{len(self.lab.hints)}: {text}", "info")))
        return text

    @_friendly
    def reset(self) -> list[str] | None:
        """Reset at once (calling it from code is the confirmation; the button asks first)."""
        removed = labs.reset(self.lab, self.cluster)
        self._refresh_status()
        display(HTML(nb.message_html(f"Reset '{self.lab.id}': removed {', '.join(removed) or 'nothing'}; "
                                     "setup applied again.", "ok")))
        return removed

    @_friendly
    def solve(self):
        exam.guard_practice(self.lab.id)  # no feedback on a running mock exam's tasks
        labs.solve(self.lab, self.cluster)
        display(HTML(nb.message_html(f"Applied the reference solution of '{self.lab.id}'.", "warn")))
        return True

    def autosolve(self):
        """In solution mode (CKALAB_NOTEBOOK_MODE=solution) apply the reference solution in place
        of the learner's cells; in normal mode do nothing, the learner's cells are the solution."""
        if nb.solution_mode():
            self.solve()

    def show_task(self):
        display(Markdown(self.lab.task))

    # --- widget plumbing ---------------------------------------------------------------------

    def _click(self, action, _button=None):
        """Run a button's action with its output captured in the bar; render any error there."""
        self._hide_confirm()
        for b in self.buttons.values():
            b.disabled = True
        try:
            with self.out:
                self.out.clear_output(wait=True)
                try:
                    action()
                except Exception as exc:  # noqa: BLE001 - shown to the learner, not swallowed
                    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                    display(HTML(nb.message_html(f"Something went wrong: {text}", "error")))
        finally:
            for b in self.buttons.values():
                b.disabled = False

    def _ask_reset(self):
        self.confirm.layout.display = "flex"

    def _hide_confirm(self):
        self.confirm.layout.display = "none"

    def _confirmed_reset(self):
        self.reset()

    def _reset_warning(self) -> str:
        targets = ", ".join(f"{t['kind']} {t['name']}" for t in self.lab.targets) or "the task's objects"
        return (f"<span>Reset deletes {html.escape(targets)} and everything labelled with this lab, "
                "then runs setup again. Continue?</span>")

    def _refresh_status(self):
        line, ok = nb.status_line(self.cluster)
        self.status.value = nb.message_html(line, "ok" if ok else "warn")

    def _solution_accordion(self) -> w.Accordion:
        """The reference solution, collapsed: the lab's solution manifests and script, rendered."""
        parts = []
        for rel in (self.lab.data.get("solution") or {}).get("manifests", []):
            parts.append((rel, self.lab.read(rel)))
        script = (self.lab.data.get("solution") or {}).get("script")
        if script:
            parts.append((script, self.lab.read(script)))
        body = "".join(f"<p><code>{html.escape(name)}</code></p><pre>{html.escape(text)}</pre>"
                       for name, text in parts) or "<p>This lab has no reference solution text.</p>"
        acc = w.Accordion(children=[w.HTML(body)], selected_index=None)
        acc.set_title(0, "Reference solution (open only after trying)")
        acc.add_class("ckalab-solution")
        return acc
