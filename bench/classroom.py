"""Benchmark `classroom up` and `classroom grade` for 30 and 100 students on the local backend.

    CKALAB_HOME=/tmp/ckalab-bench .venv/bin/python bench/classroom.py [30 100 ...]

Starts (or reuses) a local cluster called `ckalab-bench`, uses its admin kubeconfig as the
instructor's, and for each class size: `up` (namespaces, ServiceAccounts, RoleBindings, tokens,
kubeconfigs, lab setup per student), reference solutions for every other student (not timed),
`grade` with the thread pool and, for comparison, the pytest engine (grading.run) on a sample,
then `down`. Prints one line per figure. Goal: 100 students graded in under 60 s on 2 cores.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("CKALAB_HOME", tempfile.mkdtemp(prefix="ckalab-bench-"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ckalab import classroom, grading, labs  # noqa: E402
from ckalab.cluster import get_cluster  # noqa: E402
from ckalab.errors import CkalabError  # noqa: E402
from ckalab.kube import Kube  # noqa: E402
from ckalab.waiting import wait_for  # noqa: E402


def main(sizes: list[int]) -> None:
    cluster = get_cluster("ckalab-bench", "local")
    cluster.up(progress=lambda m: None)
    try:
        measure(cluster, sizes)
    finally:
        cluster.down(progress=lambda m: None)  # a benchmark leaves no processes behind


def measure(cluster, sizes: list[int]) -> None:
    kubeconfig = cluster.kubeconfig
    # kwok's fake nodes accept 110 pods each, as a kubelet does by default; 100 students' lab
    # Deployments need more, so this benchmark's own cluster gets roomier nodes.
    admin = Kube(kubeconfig)
    for node in ("node01", "node02"):
        admin.core.patch_node_status(node, {"status": {"capacity": {"pods": "1000"}, "allocatable": {"pods": "1000"}}})
    print(f"cpus={os.cpu_count()} CKALAB_HOME={os.environ['CKALAB_HOME']}")
    for n in sizes:
        name = f"bench{n}"
        roster = Path(os.environ["CKALAB_HOME"]) / f"roster-{n}.csv"
        roster.write_text("student\n" + "".join(f"student{i:03d}\n" for i in range(n)))
        t0 = time.monotonic()
        state = classroom.up(kubeconfig, roster, name)
        t_up = time.monotonic() - t0
        assert not state["failed"], state["failed"]
        students = [classroom.Student(**s) for s in state["students"]]
        ext = classroom.ExternalCluster(kubeconfig, name)
        solved = 0
        for st in students[::2]:  # half the class solves everything: a realistic pass/fail mix
            for lab_id in state["labs"]:
                try:
                    labs.solve(classroom.student_lab(lab_id, st, name), ext)
                    solved += 1
                except CkalabError as exc:  # e.g. a rollout wait timing out on a loaded machine
                    print(f"  (solution of {lab_id} for {st.id} did not finish: {str(exc).splitlines()[-1]})")
        t0 = time.monotonic()
        book = classroom.grade(name)
        t_grade = time.monotonic() - t0
        passed = sum(1 for r in book.rows.values() for e in r.values() if e["passed"])
        t0 = time.monotonic()
        classroom.grade(name, workers=1)
        t_serial = time.monotonic() - t0
        sample = students[:3]
        t0 = time.monotonic()
        for st in sample:
            for lab_id in state["labs"]:
                grading.run(classroom.student_lab(lab_id, st, name), ext)
        per_engine = (time.monotonic() - t0) / (len(sample) * len(state["labs"]))
        t0 = time.monotonic()
        classroom.down(name)
        kube = Kube(kubeconfig)
        wait_for(lambda: not kube.list("v1", "Namespace", label_selector=f"{classroom.CLASS_LABEL}={name}"),
                 300, "the class namespaces to be deleted", interval=1)
        t_down = time.monotonic() - t0
        jobs = n * len(state["labs"])
        print(f"students={n} labs/student={len(state['labs'])} ({', '.join(state['labs'])})")
        print(f"  classroom up:           {t_up:6.1f} s")
        print(f"  classroom grade (8 thr):{t_grade:6.1f} s  ({jobs} lab gradings, {passed} passed, {solved} solved)")
        print(f"  classroom grade (1 thr):{t_serial:6.1f} s")
        print(f"  pytest engine, serial:  {per_engine * jobs:6.1f} s  (estimated: {per_engine * 1000:.0f} ms per lab grading)")
        print(f"  classroom down (+ namespaces gone): {t_down:6.1f} s", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [30, 100])
