"""The live class view: a students x labs grid of a classroom, regraded every few seconds and
served as a small page on 127.0.0.1 (`ckalab classroom watch`).

A cell is one student's lab: its score and a state, which colours it:
  passed       every check passed
  failed       some points, not all (work in progress, or something wrong)
  not-started  no point yet (the lab was set up by `classroom up`, nothing of the task is done)
  unavailable  cannot be graded: the student was not set up, or the grader could not run
Clicking a cell shows its failing checks with the grader's messages. `--export` writes the last
grid as CSV or HTML when the view stops.

Only the standard library serves the page (http.server in a thread, bound to loopback); the page
polls /grid.json and builds the table with textContent, never innerHTML, because check messages
echo names the students chose.
"""

from __future__ import annotations

import csv
import json
import threading
import time
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from . import classroom, labs, render, results
from .errors import CkalabError
from .grading import FAILED, UNAVAILABLE

STATES = render.CELL_STATES   # a cell's words and colours are render's (CELL_TEXT, CELL_COLOURS)


def cell_of(entry: dict | None, not_set_up: str | None = None) -> dict:
    """One grid cell from a gradebook entry (see the module docstring for the states)."""
    if entry is None:
        return {"state": "unavailable", "score": None, "max": None, "failing": [],
                "note": f"not set up: {not_set_up}" if not_set_up else "not graded"}
    checks = entry["checks"]
    broken = [c for c in checks if c["id"] == "grader"]   # classroom.grade's stand-in for a grader crash
    failing = [{"title": c["title"], "message": c["message"]} for c in checks
               if c.get("state") == FAILED and c["id"] != "grader"]
    gone = [c["title"] for c in checks if c.get("state") == UNAVAILABLE]
    if broken:
        state, note = "unavailable", f"the grader could not run: {broken[0]['message']}"
    elif entry["max_score"] == 0:
        state, note = "unavailable", "no check of this lab can run here"
    elif entry["passed"]:
        state, note = "passed", ""
    else:
        state, note = ("not-started" if entry["score"] == 0 else "failed"), ""
    return {"state": state, "score": entry["score"], "max": entry["max_score"], "failing": failing,
            "unavailable": gone, "note": note}


def grid(book: results.Gradebook, state: dict, graded_at: float | None = None, seconds: float = 0.0) -> dict:
    """The class view's data: every roster student (set up or not) x the class's labs."""
    lab_ids = list(state["labs"])
    failed_up = state.get("failed", {})
    rows = []
    for s in state["students"]:
        sid = s["id"]
        entries = book.rows.get(sid, {})
        cells = {lab: cell_of(entries.get(lab), failed_up.get(sid)) for lab in lab_ids}
        rows.append({"id": sid, "namespace": s.get("namespace", ""), "cells": cells,
                     "score": sum(c["score"] or 0 for c in cells.values()),
                     "max": sum(c["max"] or 0 for c in cells.values())})
    counts = {st: sum(1 for r in rows for c in r["cells"].values() if c["state"] == st) for st in STATES}
    return {"class": state["class"], "labs": [{"id": i, "title": labs.load(i).title} for i in lab_ids],
            "students": rows, "counts": counts,
            "graded_at": datetime.fromtimestamp(graded_at or time.time(), timezone.utc).isoformat(timespec="seconds"),
            "grade_seconds": round(seconds, 2)}


# --- exports ---------------------------------------------------------------------------------

def export(g: dict, path: str | Path) -> Path:
    """The grid as CSV (.csv: score per cell, the state beside it) or HTML (anything else: a
    static coloured table with the failing checks under each cell)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    lab_ids = [lab["id"] for lab in g["labs"]]
    if p.suffix.lower() == ".csv":
        with open(p, "w", newline="", encoding="utf-8") as f:
            wr = csv.writer(f)
            wr.writerow(["student", *[x for i in lab_ids for x in (i, f"{i} state")], "total", "max", "failing"])
            for r in g["students"]:
                failing = "; ".join(f"{lab}: {c['title']}" for lab in lab_ids for c in r["cells"][lab]["failing"])
                wr.writerow([results.cell(x) if x not in ("", None) else "" for x in (
                    r["id"], *[x for i in lab_ids for x in (r["cells"][i]["score"], r["cells"][i]["state"])],
                    r["score"], r["max"], failing)])
        return p
    p.write_text(render.class_grid_html(g), encoding="utf-8")
    return p


# --- the live view -----------------------------------------------------------------------------

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ckalab class view</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; }
table { border-collapse: collapse; }
th, td { padding: 6px 10px; border: 1px solid #ddd; text-align: center; }
td.cell { cursor: pointer; color: #fff; font-weight: 600; min-width: 5em; }
td.cell.selected { outline: 3px solid #000; }
%(colours)s
#legend span { display: inline-block; padding: 2px 8px; margin-right: 6px; color: #fff; }
#details { margin-top: 1em; max-width: 60em; }
#details li { margin: 4px 0; }
#status { color: #555; }
</style></head>
<body>
<h1>Class <span id="class"></span></h1>
<p id="status">loading…</p>
<p id="legend">%(legend)s</p>
<table id="grid"><thead></thead><tbody></tbody></table>
<div id="details"></div>
<script>
const INTERVAL = %(poll_ms)d;
let selected = null, last = null;
function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}
function showDetails() {
  const d = document.getElementById('details');
  d.replaceChildren();
  if (!selected || !last) return;
  const row = last.students.find(s => s.id === selected[0]);
  const c = row && row.cells[selected[1]];
  if (!c) return;
  d.append(el('h2', selected[0] + ' / ' + selected[1]));
  d.append(el('p', c.score === null ? c.note : c.score + '/' + c.max + ' points: ' + c.state_text
              + (c.note ? ' (' + c.note + ')' : '')));
  if (c.failing.length) {
    const ul = el('ul');
    ul.id = 'failing';
    for (const f of c.failing) { const li = el('li'); li.append(el('b', f.title + ': ')); li.append(f.message); ul.append(li); }
    d.append(ul);
  } else if (c.state === 'passed') {
    d.append(el('p', 'Every check passed.'));
  }
  if (c.unavailable && c.unavailable.length) d.append(el('p', 'Not available here: ' + c.unavailable.join(', ')));
}
function render(g) {
  last = g;
  document.getElementById('class').textContent = g.class;
  const head = document.querySelector('#grid thead'), body = document.querySelector('#grid tbody');
  const hr = el('tr'); hr.append(el('th', 'student'));
  for (const l of g.labs) { const th = el('th', l.id); th.title = l.title; hr.append(th); }
  hr.append(el('th', 'total'));
  head.replaceChildren(hr);
  body.replaceChildren();
  for (const s of g.students) {
    const tr = el('tr'); tr.append(el('th', s.id));
    for (const l of g.labs) {
      const c = s.cells[l.id];
      const td = el('td', c.score === null ? '–' : c.score + '/' + c.max, 'cell ' + c.state);
      td.dataset.student = s.id; td.dataset.lab = l.id; td.dataset.state = c.state;
      td.title = c.state_text;
      if (selected && selected[0] === s.id && selected[1] === l.id) td.classList.add('selected');
      td.onclick = () => { selected = [s.id, l.id]; render(last); };
      tr.append(td);
    }
    tr.append(el('td', s.score + '/' + s.max));
    body.append(tr);
  }
  document.getElementById('status').textContent = 'graded at ' + g.graded_at + ' (' + g.grade_seconds
    + ' s), round ' + g.round + '; refreshes every ' + (INTERVAL / 1000) + ' s';
  showDetails();
}
async function poll() {
  try {
    const r = await fetch('grid.json', {cache: 'no-store'});
    if (r.ok) render(await r.json());
    else document.getElementById('status').textContent = 'not graded yet (' + r.status + ')';
  } catch (e) {
    document.getElementById('status').textContent = 'the class view is not answering: ' + e;
  }
  setTimeout(poll, INTERVAL);
}
poll();
</script></body></html>
"""


def page(poll_seconds: float) -> bytes:
    colours = "\n".join(f"td.cell.{s}, #legend .{s} {{ background: {c}; }}" for s, c in render.CELL_COLOURS.items())
    legend = "".join(f'<span class="{s}">{render.CELL_TEXT[s]}</span>' for s in STATES)
    return (PAGE % {"colours": colours, "legend": legend, "poll_ms": int(poll_seconds * 1000)}).encode()


class Watch:
    """Regrade a classroom every `interval` seconds in a thread and serve the grid on loopback."""

    def __init__(self, class_name: str, port: int = 0, interval: float = 5.0, workers: int = 8,
                 grader=None):
        if interval <= 0:
            raise CkalabError("--interval must be a positive number of seconds.")
        self.class_name = class_name
        self.state = classroom.load_state(class_name)
        self.interval = interval
        self.workers = workers
        self.grader = grader or (lambda: classroom.grade(class_name, workers=workers, write=False))
        self.grid: dict | None = None
        self.error = ""
        self.rounds = 0
        self._stop = threading.Event()
        watch = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                path = self.path.split("?")[0]
                if path == "/":
                    self._send(200, "text/html; charset=utf-8", page(min(watch.interval, 5.0)))
                elif path == "/grid.json":
                    g = watch.grid
                    if g is None:
                        self._send(503, "application/json", json.dumps({"error": watch.error or "grading"}).encode())
                    else:
                        self._send(200, "application/json", json.dumps(g).encode())
                else:
                    self._send(404, "text/plain", b"not found")

            def _send(self, code, ctype, body):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # every poll would print a line
                pass

        try:
            self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        except OSError as exc:
            raise CkalabError(f"Cannot serve the class view on 127.0.0.1:{port}: {exc.strerror}. "
                              "Choose another --port (0 picks a free one).") from None
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"

    def regrade(self) -> dict:
        t0 = time.monotonic()
        book = self.grader()
        g = grid(book, self.state, seconds=time.monotonic() - t0)
        for r in g["students"]:
            for c in r["cells"].values():
                c["state_text"] = render.CELL_TEXT[c["state"]]
        self.rounds += 1
        g["round"] = self.rounds
        self.grid = g
        return g

    def _loop(self):
        while not self._stop.is_set():
            try:
                self.regrade()
                self.error = ""
            except Exception as exc:  # noqa: BLE001 - a failed round keeps the last grid and says why
                self.error = f"{type(exc).__name__}: {exc}"
            self._stop.wait(self.interval)

    def start(self) -> "Watch":
        self._threads = [threading.Thread(target=self.server.serve_forever, daemon=True),
                         threading.Thread(target=self._loop, daemon=True)]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        for t in self._threads:
            t.join(timeout=30)
