"""`ckalab` command line: argument parsing only; every verb is a one-line call into the library."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from . import __version__, grading, labs
from .cluster import choose_backend, get_cluster
from .errors import CkalabError


def _cluster(args, backend: str | None = None):
    return get_cluster(args.name, backend)


def cmd_up(args):
    _cluster(args, choose_backend(args.backend)).up(progress=lambda m: print(m, flush=True))


def cmd_down(args):
    _cluster(args).down()


def cmd_status(args):
    st = _cluster(args).status()
    print(json.dumps(st.to_dict(), indent=2) if args.json else st.render())
    return 0 if st.state == "running" else 1


def cmd_kubeconfig(args):
    print(_cluster(args).kubeconfig)


def cmd_env(args):
    print(f"export KUBECONFIG={shlex.quote(str(_cluster(args).kubeconfig))}")
    print(f"export CKALAB_CLUSTER={shlex.quote(args.name)}")
    print("# Run: eval \"$(ckalab env)\"")


def cmd_labs(args):
    for lab in labs.catalogue():
        print(f"{lab.order:>2}  {lab.id:<20} {lab.title}")


def cmd_validate(args):
    problems = labs.validate_all()
    for p in problems:
        print(p)
    print(f"{len(labs.lab_ids())} labs, {len(problems)} problems")
    return 1 if problems else 0


def _lab(args):
    return labs.load(args.lab, args.seed)


def cmd_start(args):
    lab = _lab(args)
    workdir = labs.start(lab, _cluster(args))
    print(lab.task.rstrip())
    print(f"\nWork directory: {workdir}\nWhen done: ckalab check {lab.id}    Stuck? ckalab hint {lab.id}")


def cmd_check(args):
    result = grading.run(_lab(args), _cluster(args))
    print(result.to_json() if args.json else result.render())
    return 0 if result.passed else 1


def cmd_hint(args):
    lab = _lab(args)
    n, text = labs.next_hint(lab)
    print(f"Hint {n}/{len(lab.hints)} for {lab.id}: {text}")


def cmd_reset(args):
    lab = _lab(args)
    removed = labs.reset(lab, _cluster(args))
    print(f"Reset {lab.id}: removed {', '.join(removed) or 'nothing'}; setup applied again.")


def cmd_solve(args):
    lab = _lab(args)
    labs.solve(lab, _cluster(args))
    print(f"Applied the reference solution of {lab.id}. Check it with: ckalab check {lab.id}")


def cmd_workdir(args):
    print(_lab(args).workdir)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ckalab", description="CKA Security practice labs on a real cluster.")
    p.add_argument("--version", action="version", version=f"ckalab {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--name", default=os.environ.get("CKALAB_CLUSTER", "ckalab"), help="cluster name")

    def add(name, fn, help_, lab=False):
        sp = sub.add_parser(name, parents=[common], help=help_, description=help_)
        if lab:
            sp.add_argument("lab", help="lab id (see 'ckalab labs')")
            sp.add_argument("--seed", default=os.environ.get("CKALAB_SEED"),
                            help="variant seed (or student id); default: the canonical names")
        sp.set_defaults(fn=fn)
        return sp

    up = add("up", cmd_up, "start (or reuse) the lab cluster and wait until it is ready")
    up.add_argument("--backend", default="auto", choices=["auto", "local", "kind"])
    add("down", cmd_down, "stop the cluster (succeeds when already stopped)")
    add("status", cmd_status, "show the cluster and its components").add_argument("--json", action="store_true")
    add("kubeconfig", cmd_kubeconfig, "print the path of the lab's admin kubeconfig")
    add("env", cmd_env, "print 'export KUBECONFIG=...' for a shell")
    add("labs", cmd_labs, "list the labs")
    add("validate", cmd_validate, "check every lab's data and report all problems")
    add("start", cmd_start, "set up a lab and print its task", lab=True)
    add("check", cmd_check, "grade a lab: exit 0 all pass, 1 some fail, 2 error", lab=True).add_argument(
        "--json", action="store_true")
    add("hint", cmd_hint, "show the next hint", lab=True)
    add("reset", cmd_reset, "remove the lab's objects and set it up again", lab=True)
    add("solve", cmd_solve, "apply the reference solution (instructors, tests)", lab=True)
    add("workdir", cmd_workdir, "print the lab's work directory", lab=True)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except CkalabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
