"""The notebook UIs: the lab bar (Start / Check / Hint / Reset and the reference solution) and
the mock exam panel (Start, countdown, tasks, Finish with a confirmation, the report).

It is deliberately thin: every button calls the same library function as the CLI verb
(labs.start, labs.check, labs.next_hint, labs.reset, labs.solve), so a notebook and
`ckalab check` can never disagree, and those refuse feedback on a running mock exam's tasks.
Every action is also a method (bar.start(), bar.check(), ...) so a headless run (nbclient, CI)
drives the same code as a click.

Errors never escape as bare tracebacks into the learner's face: CkalabError (which includes
ClusterNotRunning) carries a message that says what to do, and is shown as such; anything else
is shown with its type and text inside the bar's output area. A stopped cluster met from a code
cell raises notebook.StopHere instead (one line, no traceback), so "Run All" stops there.

The status line is read again around every action: the cluster may have been started or stopped
in a terminal since the bar was drawn.
"""

from __future__ import annotations

import functools
import html
import os
import threading
import time
import traceback

import ipywidgets as w
from IPython.display import HTML, Markdown, display

from . import exam, labs, render
from . import notebook as nb
from .errors import CkalabError, ClusterNotRunning
from .grading import GradeResult


def _friendly(fn):
    """Show a CkalabError's message (e.g. 'cluster not running: run ckalab up') and return None;
    refresh the status line whatever happened. From a code cell (not a click) a stopped cluster
    raises StopHere, so "Run All" ends at this cell instead of in later ones that need its result."""
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except CkalabError as exc:
            text = str(exc)
            if isinstance(exc, ClusterNotRunning) and not self._clicking:
                raise nb.StopHere(text) from None
            display(HTML(render.message_html(text, "error")))
            return None
        finally:
            self._refresh_status()
    return wrapper


class LabBar:
    """`bar = LabBar("rbac-role"); bar` shows the bar; `bar.check()` grades from code."""

    def __init__(self, lab_id: str, seed: str | None = None):
        self.lab, self.cluster = nb.use_lab(lab_id, seed)
        self.last_result: GradeResult | None = None
        self._clicking = False
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
        display(HTML(render.message_html(f"Lab '{self.lab.id}' is set up. Work directory: {workdir}\n"
                                     "Cells in this notebook run there, with the lab cluster's kubeconfig.", "ok")))
        if note := labs.backend_note(self.lab, self.cluster):
            display(HTML(render.message_html(note, "info")))
        self.show_task()
        return workdir

    @_friendly
    def check(self) -> GradeResult | None:
        result = labs.check(self.lab, self.cluster)
        self.last_result = result
        nb.record(result)
        display(HTML(render.result_html(result)))
        return result

    @_friendly
    def hint(self) -> str | None:
        n, text = labs.next_hint(self.lab)
        display(HTML(render.message_html(f"Hint {n}/{len(self.lab.hints)}: {text}", "info")))
        return text

    @_friendly
    def reset(self) -> list[str] | None:
        """Reset at once (calling it from code is the confirmation; the button asks first)."""
        removed = labs.reset(self.lab, self.cluster)
        self._refresh_status()
        display(HTML(render.message_html(f"Reset '{self.lab.id}': removed {', '.join(removed) or 'nothing'}; "
                                     "setup applied again.", "ok")))
        return removed

    @_friendly
    def solve(self):
        labs.solve(self.lab, self.cluster)
        display(HTML(render.message_html(f"Applied the reference solution of '{self.lab.id}'.", "warn")))
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
        self._clicking = True
        self._refresh_status()  # at once: a slow action should not run under a stale banner
        try:
            with self.out:
                self.out.clear_output(wait=True)
                try:
                    action()
                except Exception as exc:  # noqa: BLE001 - shown to the learner, not swallowed
                    text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                    display(HTML(render.message_html(f"Something went wrong: {text}", "error")))
        finally:
            self._clicking = False
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
        self.status.value = render.message_html(line, "ok" if ok else "warn")
        self.status.add_class("ckalab-status")

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


class ExamPanel:
    """The mock exam in a notebook (notebooks/exam.ipynb): the settings and a Start button, then a
    countdown, the tasks rendered as in the lab notebooks, and Finish (asks first); the report,
    when graded, lists every task's checks like the lab bar.

    Creating the panel never starts an exam ("Run All" just to look must not start a 120-minute
    timer): only the Start button (or `panel.start()` from code) does. A running exam is resumed.
    `panel.finish()` from code grades at once (the call is the confirmation, like `bar.reset()`).
    """

    def __init__(self, count: int | None = None, lab_ids: list[str] | None = None,
                 duration: float = exam.DEFAULT_DURATION, seed: str | None = None,
                 cluster_name: str | None = None):
        self.settings = {"count": count, "lab_ids": lab_ids, "duration": duration, "seed": seed}
        self.cluster = nb.use_cluster(cluster_name)
        self.clock = w.HTML()
        self.clock.add_class("ckalab-exam-clock")
        self.intro = w.HTML()
        self.start_button = self._button("Start the exam", "play", "primary", "ckalab-exam-start", self.start)
        self.finish_button = self._button("Finish and grade", "flag-checkered", "danger",
                                          "ckalab-exam-finish", self._ask_finish)
        yes = self._button("Yes, finish and grade", "", "danger", "ckalab-exam-finish-yes", self.finish)
        no = self._button("Keep working", "", "", "ckalab-exam-finish-no", self._hide_confirm)
        self.confirm = w.HBox([w.HTML("<span>Grading is final: no changes count afterwards. Finish now?</span>"),
                               yes, no], layout=w.Layout(display="none"))
        self.confirm.add_class("ckalab-exam-confirm")
        self.messages = w.Output()
        self.tasks = w.VBox()
        self.report_box = w.HTML()
        self.widget = w.VBox([self.clock, self.intro, w.HBox([self.start_button, self.finish_button]),
                              self.confirm, self.messages, self.tasks, self.report_box])
        self.widget.add_class("ckalab-exam")
        self._ticking = False
        state = exam.load_state()
        if exam.running(state):
            self._show_running(state)
        else:
            self._show_ready(state)

    def _ipython_display_(self):
        display(self.widget)

    # --- actions ------------------------------------------------------------------------------

    def start(self) -> dict | None:
        """Set up the tasks and start the timer (the Start button calls this)."""
        state = exam.load_state()
        if not exam.running(state):
            s = self.settings
            state = self._guard(lambda: exam.start(self.cluster, s["lab_ids"], s["count"], s["duration"], s["seed"]))
        if state:
            self._show_running(state)
        return state

    def finish(self) -> dict | None:
        """Grade now (the confirmation's Yes calls this); the exam stays open if grading cannot run."""
        self._hide_confirm()
        self.clock.value = render.message_html("Grading ...", "info")
        report = self._guard(lambda: exam.finish(self.cluster))
        if report:
            self._show_report(report)
        else:
            self.finish_button.disabled = False
        return report

    def report(self):
        """The report if the exam is graded, else a note; safe in "Run All"."""
        state = exam.load_state()
        if state and state.get("report"):
            return HTML(render.exam_report_html(state["report"], exam.exam_dir()))
        if exam.running(state):
            return HTML(render.message_html("The exam is still running: press 'Finish and grade' above when done.", "info"))
        return HTML(render.message_html("No exam has been graded yet: press 'Start the exam' above to begin.", "info"))

    # --- rendering ----------------------------------------------------------------------------

    def _show_ready(self, state: dict | None):
        s = self.settings
        what = (f"the labs {', '.join(s['lab_ids'])}" if s["lab_ids"] else
                f"{s['count']} labs picked at random" if s["count"] else "every lab")
        seed = f", variant seed {html.escape(str(s['seed']))}" if s["seed"] is not None else ", canonical names"
        self.intro.value = (f"<div>Ready to start a mock exam: {html.escape(what)}, {s['duration']:g} minutes{seed}. "
                            "The timer starts when you press <b>Start the exam</b>; there is no feedback until "
                            "you finish.</div>")
        self.clock.value = ""
        self.start_button.layout.display = "inline-flex"
        self.finish_button.layout.display = "none"
        if state and state.get("report"):
            self.report_box.value = (f"<div style='margin-top:8px;color:{render.MUTED}'>The last exam's report:</div>"
                                     + render.exam_report_html(state["report"], exam.exam_dir()))

    def _show_running(self, state: dict):
        n = len(state["tasks"])
        self.intro.value = (f"<div>Mock exam {html.escape(state['id'])}: {n} task{'s' if n > 1 else ''}, "
                            f"{state['duration_min']:g} minutes, pass mark {exam.PASS_MARK:g}%. Work in a terminal "
                            "(<code>eval \"$(ckalab env)\"</code>) or in <code>!kubectl</code> cells below.</div>")
        self.start_button.layout.display = "none"
        self.finish_button.layout.display = "inline-flex"
        self.finish_button.disabled = False
        self.report_box.value = ""
        self.tasks.children = [self._task_view(t, state) for t in state["tasks"]]
        self._tick_once(state)
        if not self._ticking:
            self._ticking = True
            threading.Thread(target=self._tick, daemon=True).start()

    def _task_view(self, task: dict, state: dict) -> w.Output:
        """One task as Markdown, the way the lab notebooks show a task (code blocks, lists, bold names)."""
        lab = exam.task_lab(task)
        total = sum(t["weight"] for t in state["tasks"])
        out = w.Output(layout=w.Layout(border="1px solid #d0d7de", padding="0 8px", margin="4px 0"))
        out.add_class("ckalab-exam-task")
        out.append_display_data(Markdown(  # the task text brings its own heading
            f"**Task {task['n']}** · {task['weight']} of {total} points · about {task['minutes']} minutes · "
            f"work directory `{lab.workdir}`\n\n{lab.task.rstrip()}\n"))
        return out

    def _show_report(self, report: dict):
        self._ticking = False
        self.finish_button.disabled = True
        self.finish_button.layout.display = "none"
        self._hide_confirm()
        self.clock.value = render.message_html("The exam is over: the report is below the tasks.", "info")
        self.intro.value = ""
        self.report_box.value = render.exam_report_html(report, exam.exam_dir())

    def _tick_once(self, state: dict) -> bool:
        """Update the countdown; grade when time is up. True while the exam runs."""
        left = state["deadline"] - time.time()
        if left > 0:
            self.clock.value = (f'<div class="ckalab-countdown" style="font-size:1.4em;font-weight:bold">'
                                f'Time left {render.clock(left)}</div>')
            return True
        try:
            self._show_report(exam.status(self.cluster)[1])
            return False
        except CkalabError as exc:  # not graded yet (e.g. the cluster is stopped): say so, retry
            self.clock.value = render.message_html(str(exc), "error")
            return True

    def _tick(self):
        while self._ticking:
            state = exam.load_state()
            if not exam.running(state) and not (state and state.get("report")):
                break
            if state.get("report"):  # graded elsewhere (ckalab exam finish in a terminal)
                self._show_report(state["report"])
                break
            if not self._tick_once(state):
                break
            time.sleep(1 if state["deadline"] > time.time() else 5)
        self._ticking = False

    # --- plumbing -----------------------------------------------------------------------------

    def _button(self, text, icon, style, cls, action) -> w.Button:
        b = w.Button(description=text, icon=icon, button_style=style)
        b.add_class(cls)
        b.on_click(lambda _b: self._clicked(action))
        return b

    def _clicked(self, action):
        with self.messages:
            self.messages.clear_output()
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - shown to the learner, not swallowed
                text = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                display(HTML(render.message_html(f"Something went wrong: {text}", "error")))

    def _guard(self, fn):
        """Run a domain call; show a CkalabError's message in the panel and return None."""
        try:
            return fn()
        except CkalabError as exc:
            self.messages.clear_output()
            self.messages.append_display_data(HTML(render.message_html(str(exc), "error")))
            return None

    def _ask_finish(self):
        self.finish_button.disabled = True
        self.confirm.layout.display = "flex"

    def _hide_confirm(self):
        self.confirm.layout.display = "none"
        self.finish_button.disabled = False
