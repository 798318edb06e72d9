"""Print timings on this machine: binary build (cold if the cache is empty, else warm), `up`
from stopped to ready, `up` on a running cluster, and `check` in-process for every lab.

    .venv/bin/python bench/bench.py [--cold-build]

--cold-build empties a private binary cache and Go build cache first (takes minutes).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cold-build", action="store_true", help="measure a build from an empty cache")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    os.environ["CKALAB_HOME"] = tempfile.mkdtemp(prefix="ckalab-bench-")
    if args.cold_build:
        os.environ["CKALAB_BIN_CACHE"] = tempfile.mkdtemp(prefix="ckalab-bench-bin-")
        os.environ["GOCACHE"] = tempfile.mkdtemp(prefix="ckalab-bench-gocache-")

    from ckalab.cluster import get_cluster
    from ckalab.cluster.local import build

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    t = time.monotonic()
    _, missing = build.find_binaries()
    build.ensure_binaries(progress=lambda m: None)
    kind = f"cold build of {', '.join(missing)}" if missing else "warm (cached) binaries"
    print(f"binaries: {kind}: {time.monotonic() - t:.1f}s")

    c = get_cluster("bench", "local")
    try:
        measure(c, args.rounds)
    finally:
        c.down(progress=lambda m: None)


def measure(c, rounds: int) -> None:
    from ckalab import grading, labs

    t = time.monotonic()
    c.up(progress=lambda m: None)
    print(f"up (first, new PKI + etcd): {time.monotonic() - t:.1f}s")
    ups = []
    for _ in range(rounds):
        c.down(progress=lambda m: None)
        t = time.monotonic()
        c.up(progress=lambda m: None)
        ups.append(time.monotonic() - t)
    print(f"up (stopped -> ready, warm cache), {rounds} runs: median {statistics.median(ups):.1f}s, "
          f"max {max(ups):.1f}s")
    t = time.monotonic()
    c.up(progress=lambda m: None)
    print(f"up (already running, no-op): {time.monotonic() - t:.2f}s")

    for lab_id in labs.lab_ids():
        lab = labs.load(lab_id)
        try:
            labs.start(lab, c)
            times = [grading.run(lab, c).duration_s for _ in range(rounds)]
            labs.solve(lab, c)
            solved = grading.run(lab, c)
        except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
            print(f"check {lab_id:<20} could not be measured: {str(exc).splitlines()[0]}")
            continue
        print(f"check {lab_id:<20} unsolved median {statistics.median(times):.2f}s, "
              f"solved {solved.duration_s:.2f}s ({solved.score}/{solved.max_score})")


if __name__ == "__main__":
    main()
