"""How fast a check is, against its floor, all measured in one run on one cluster:

  (a) a Killercoda-style verify script for rbac-role: bash, one kubectl process per check
      (get role, get rolebinding, auth can-i x5), the yardstick;
  (b) a cold `ckalab check LAB`: a fresh process, as a learner types it, for every lab;
  (c) the in-process check (grading.run in a process that has graded before: a notebook).

    .venv/bin/python bench/cold_check.py [--rounds 7] [--home DIR --name CLUSTER] [--labs ...]
        [--against CHECKOUT]   # e.g. git worktree add --detach /tmp/old <commit>: before/after

Without --name it starts a cluster of its own in a temporary CKALAB_HOME and stops it at the end;
with --home/--name it uses that running cluster (e.g. a kept test cluster) and leaves it running.
Each lab's cold check runs once untimed first, to cache bytecode as an installed ckalab has it.
It prints medians, the machine's load average before and after, the parts of the client a cold
check imported without needing them (AVOIDABLE), and the goals (figures on a busy machine say
little: compare (b) with (a), which the same load slows alike):
  cold rbac-role <= 0.75 x (a); every lab's cold check < 0.5 s; in-process <= 0.1 s per lab.
The lab states it leaves: every lab started and solved (its own home), or, with --name, each lab
reset to its fresh start afterwards.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
RBAC_VERIFY = """\
set -e
k() { "$KUBECTL" --kubeconfig "$KCFG" "$@"; }
k get role "$ROLE" -n "$NS" -o name >/dev/null
k get rolebinding "$BINDING" -n "$NS" -o name >/dev/null
for verb in create list delete; do
  [ "$(k auth can-i "$verb" pods --as "$USER_NAME" -n "$NS")" = yes ]
done
[ "$(k auth can-i get secrets --as "$USER_NAME" -n "$NS" || true)" = no ]
[ "$(k auth can-i create deployments --as "$USER_NAME" -n "$NS" || true)" = no ]
"""


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _median(fn, rounds: int) -> float:
    return statistics.median(_timed(fn) for _ in range(rounds))


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _kubectl() -> str:
    local = VENV_BIN / "kubectl"
    return str(local) if local.exists() else "kubectl"


def verify_script(cluster, lab):
    p = lab.params
    env = dict(os.environ, KUBECTL=_kubectl(), KCFG=str(cluster.kubeconfig), ROLE=p["role"], NS=p["namespace"],
               BINDING=p["binding"], USER_NAME=p["user"])

    def once():
        if subprocess.run(["bash", "-c", RBAC_VERIFY], env=env).returncode != 0:
            raise SystemExit("the kubectl verify script failed on the solved rbac-role (is another run "
                             "resetting labs on this cluster?)")
    return once


# Cold means a new process, not uncompiled sources: an installed ckalab has its bytecode, so the
# checks may cache theirs (outside the checkout) even where PYTHONDONTWRITEBYTECODE is set.
PYCACHE = Path(tempfile.gettempdir()) / "ckalab-bench-pycache"


def cold_check(lab_id: str, name: str, checkout: str | None = None):
    cmd = [str(VENV_BIN / "ckalab"), "check", lab_id, "--name", name]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    if checkout:  # that checkout's ckalab (and its labs and graders), ahead of the installed one
        env["PYTHONPATH"] = checkout

    def once():
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode != 0:  # the lab is solved: anything else is not a measurement of a check
            raise SystemExit(f"{' '.join(cmd)} exited {out.returncode}:\n{out.stdout}{out.stderr}")
    return once


# Parts of the client and tools a check does not need: a cold check that imports one of them pays
# for it (pytest ~80 ms, pydantic and dateutil through the ApiClient ~90 ms, kubernetes.config with
# requests-oauthlib ~40 ms). Listed per lab, from one untimed run with -X importtime.
AVOIDABLE = ("pytest", "pydantic", "dateutil", "kubernetes.config", "requests", "kubernetes.client.api_client",
             "kubernetes.dynamic", "kubernetes.stream")


def avoidable_imports(lab_id: str, name: str) -> list[str]:
    """The AVOIDABLE modules a cold `ckalab check LAB` imports (also caches its bytecode)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    out = subprocess.run([sys.executable, "-X", "importtime", str(VENV_BIN / "ckalab"), "check", lab_id,
                          "--name", name], capture_output=True, text=True, env=env)
    seen = {line.rpartition("|")[2].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    return [m for m in AVOIDABLE if m in seen]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--home", help="CKALAB_HOME of a running cluster to use (with --name)")
    ap.add_argument("--name", help="that cluster's name; default: start one of our own")
    ap.add_argument("--labs", nargs="+", help="only these labs for (b) and (c) (default: all)")
    ap.add_argument("--against", metavar="CHECKOUT",
                    help="another ckalab checkout (e.g. a git worktree of an older commit): its cold check "
                         "of each lab is timed interleaved with this one's and with (a), as (b')")
    args = ap.parse_args()
    own = args.name is None
    os.environ["CKALAB_HOME"] = args.home or (os.environ["CKALAB_HOME"] if not own and "CKALAB_HOME" in os.environ
                                              else tempfile.mkdtemp(prefix="ckalab-bench-"))
    from ckalab import grading, labs
    from ckalab.cluster import get_cluster
    from ckalab.errors import CkalabError

    name = args.name or "bench"
    cluster = get_cluster(name, "local")
    if own:
        cluster.up(progress=lambda m: None)
    elif cluster.status().state != "running":
        print(f"cluster '{name}' in {os.environ['CKALAB_HOME']} is not running", file=sys.stderr)
        return 2
    started: list[str] = []
    try:
        print(f"{os.cpu_count()} cores, load average before: {_load()} (1, 5, 15 min); "
              f"medians of {args.rounds} runs")
        for lab_id in dict.fromkeys(["rbac-role", *(args.labs or labs.lab_ids())]):
            lab = labs.load(lab_id)
            try:
                labs.start(lab, cluster)
                started.append(lab_id)
                labs.solve(lab, cluster)
            except CkalabError as exc:  # a lab this cluster cannot hold (apiserver-repair needs real nodes)
                if lab_id == "rbac-role":
                    raise
                print(f"skipped {lab_id}: {' '.join(str(exc).splitlines()[1:])[:200] or exc}")
        lab_ids = [i for i in (args.labs or labs.lab_ids()) if i in started]
        script, cold = verify_script(cluster, labs.load("rbac-role")), cold_check("rbac-role", name)
        extra = {}
        for lab_id in lab_ids:  # not timed: writes the bytecode cache, as installing ckalab would
            cold_check(lab_id, name)()
            extra[lab_id] = avoidable_imports(lab_id, name)
        pairs = [(_timed(script), _timed(cold)) for _ in range(args.rounds)]  # interleaved: the same load
        a = statistics.median(p[0] for p in pairs)
        ratios = sorted(p[1] / p[0] for p in pairs)
        print(f"(a) kubectl verify script, rbac-role (7 kubectl processes): {a:.3f} s")
        b = {lab_id: _median(cold_check(lab_id, name), args.rounds) for lab_id in lab_ids if lab_id != "rbac-role"}
        b["rbac-role"] = statistics.median(p[1] for p in pairs)
        ratio = statistics.median(ratios)
        print(f"(b) cold `ckalab check rbac-role`: {b['rbac-role']:.3f} s; per round (b)/(a) median {ratio:.2f}, "
              f"range {ratios[0]:.2f}-{ratios[-1]:.2f} [goal <= 0.75: {'met' if ratio <= 0.75 else 'NOT met'}]")
        c = {}
        for lab_id in lab_ids:
            lab = labs.load(lab_id)
            first = grading.run(lab, cluster)  # imports the grader, as a notebook's first click does
            if first.failed():
                raise SystemExit(f"{lab_id} is solved but grades {first.score}/{first.max_score}:\n{first.render()}")
            c[lab_id] = _median(lambda: grading.run(lab, cluster), args.rounds)
        print(f"{'lab':<20} {'(b) cold CLI':>12} {'(c) in-process':>15}  avoidable imports of (b)")
        for lab_id in lab_ids:
            print(f"{lab_id:<20} {b[lab_id]:>10.3f} s {c[lab_id]:>13.3f} s  {', '.join(extra[lab_id]) or 'none'}")
        if args.against:
            print(f"interleaved with {args.against} (b'), per lab: medians, and of each round's ratio to (a)")
            for lab_id in lab_ids:
                old, new = cold_check(lab_id, name, args.against), cold_check(lab_id, name)
                old()  # its bytecode
                rounds = [(_timed(script), _timed(old), _timed(new)) for _ in range(args.rounds)]
                med = [statistics.median(r[i] for r in rounds) for i in range(3)]
                rel = [statistics.median(r[i] / r[0] for r in rounds) for i in (1, 2)]
                print(f"{lab_id:<20} (a) {med[0]:.3f} s  (b') {med[1]:.3f} s {rel[0]:.2f}x  "
                      f"(b) {med[2]:.3f} s {rel[1]:.2f}x")
        slow_b = [i for i in lab_ids if b[i] >= 0.5]
        slow_c = [i for i in lab_ids if c[i] > 0.1]
        print(f"every cold check < 0.5 s: {'met' if not slow_b else 'NOT met: ' + ', '.join(slow_b)}")
        print(f"every in-process check <= 0.1 s: {'met' if not slow_c else 'NOT met: ' + ', '.join(slow_c)}")
        print(f"load average after: {_load()}")
    finally:
        if own:
            cluster.down(progress=lambda m: None)
        else:
            for lab_id in started:
                labs.reset(labs.load(lab_id), cluster)
    return 0


if __name__ == "__main__":
    sys.exit(main())
