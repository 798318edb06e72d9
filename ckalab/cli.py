"""`ckalab` command line: argument parsing, and the verbs: each calls the library (which returns
data and prints nothing) and prints what it got, through ckalab.render for results.

A verb imports what it needs when it runs, and the parser fills in the options of the verb being
run only: a cold `ckalab check` should not pay for the classroom, the gradebook or the notebook
(nor for pytest, or for the Kubernetes client where a verb needs no cluster).
"""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .errors import CkalabError


def _cluster(args, backend: str | None = None):
    from .cluster import get_cluster

    return get_cluster(args.name, backend)


def cmd_up(args):
    from .cluster import choose_backend

    cluster = _cluster(args, choose_backend(args.backend))
    if args.nodes:  # read by the local backend's real-node support (ckalab/cluster/nodes)
        cluster.check_nodes(args.nodes)  # the backend says whether it has that choice
        os.environ["CKALAB_NODES"] = args.nodes
    cluster.up(progress=lambda m: print(m, flush=True))


def cmd_down(args):
    _cluster(args).down()


def cmd_status(args):
    import json

    st = _cluster(args).status()
    print(json.dumps(st.to_dict(), indent=2) if args.json else st.render())
    return 0 if st.state == "running" else 1


def cmd_kubeconfig(args):
    print(_cluster(args).kubeconfig)


def cmd_ssh(args):
    argv, env = _cluster(args).shell(args.node, args.command or None)
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)  # the shell replaces ckalab: signals, tty and exit code are its own


def cmd_restore_manifests(args):
    from . import labs

    cluster = _cluster(args)
    if not cluster.offers("static-pods"):
        raise CkalabError(f"Cluster '{cluster.name}' does not run its control plane as static pods "
                          "(that needs real nodes: 'ckalab up --nodes real', as root).")
    # What a lab changed beyond the manifests (Secrets encrypted with the learner's key, renewed
    # certificates, the audit policy) is undone first, while the learner's API server still runs.
    done = labs.contain(None, cluster)
    labs.refresh_watchers(cluster)  # the learner's next step may be traffic or a NetworkPolicy
    print("\n".join(done) if done else "The static pod manifests are ckalab's already; nothing to restore.")


def cmd_private_image(args):
    cluster = _cluster(args)
    if not cluster.offers("private-registry") and args.if_offered:
        print(f"Cluster '{cluster.name}' has no private registry (real nodes have one): "
              f"{args.image} is not published; its pulls fail as from any unknown registry.")
        return
    print(f"{cluster.publish_private_image(args.image, args.user, args.password)} is served to user "
          f"'{args.user}' only (the nodes reach it under that name).")


def cmd_node_file(args):
    # One way for setup/solve scripts (and learners) to read a control-plane file on any backend
    # that offers "node-files": the backend knows where its node's files live.
    cluster = _cluster(args)
    if not cluster.offers("node-files"):
        raise CkalabError(f"Reading node files is not available on the {cluster.backend} backend "
                          f"(cluster '{cluster.name}').")
    sys.stdout.buffer.write(cluster.read_file(args.path))
    sys.stdout.flush()


def cmd_env(args):
    import shlex

    print(f"export KUBECONFIG={shlex.quote(str(_cluster(args).kubeconfig))}")
    print(f"export CKALAB_CLUSTER={shlex.quote(args.name)}")
    print("# Run: eval \"$(ckalab env)\"")


def cmd_labs(args):
    from . import labs

    for lab in labs.catalogue():
        print(f"{lab.order:>2}  {lab.id:<20} {lab.title}")


def cmd_validate(args):
    from . import labs

    problems = labs.validate_all()
    for p in problems:
        print(p)
    print(f"{len(labs.lab_ids())} labs, {len(problems)} problems")
    return 1 if problems else 0


def _lab(args):
    from . import labs

    try:
        return labs.load(args.lab, args.seed)
    except CkalabError:
        import difflib

        known = labs.lab_ids()
        if args.lab in known:
            raise  # the lab exists but its data is invalid: that message says why
        close = difflib.get_close_matches(args.lab, known, n=1, cutoff=0.6)
        guess = f"Did you mean '{close[0]}'? " if close else ""
        raise CkalabError(f"No lab '{args.lab}'. {guess}'ckalab labs' lists them all.") from None


def cmd_start(args):
    from . import labs

    lab, cluster = _lab(args), _cluster(args)
    workdir = labs.start(lab, cluster)
    print(lab.task.rstrip())
    if note := labs.backend_note(lab, cluster):
        print(f"\n{note}")
    print(f"\nWork directory: {workdir}\nWhen done: ckalab check {lab.id}    Stuck? ckalab hint {lab.id}")


def cmd_check(args):
    from . import exam, labs
    from .cluster.base import command
    from .errors import ClusterNotRunning

    exam.guard_practice(args.lab)  # the exam rule first, before any other word about the lab
    lab, cluster = _lab(args), _cluster(args)
    if not lab.started():
        # Its checks would report the setup's objects as missing, as if the learner had broken them.
        raise CkalabError(f"Lab '{lab.id}' has not been started here: 'ckalab start {lab.id}' sets it up "
                          "and prints the task.")
    result = labs.check(lab, cluster)
    if not result.passed and not labs.edits_control_plane(lab) and cluster.status().state != "running":
        # The API server went away during the checks: their failures say nothing about the answer.
        # (A lab that breaks the control plane is graded from the node while it is down.)
        raise ClusterNotRunning(f"Cluster '{cluster.name}' stopped answering during the check, so it could "
                                f"not be graded: see '{command('status', cluster.name)}'.")
    if args.json:
        print(result.to_json())
    else:
        from .render import result_text

        print(result_text(result))
    return 0 if result.passed else 1


def cmd_hint(args):
    from . import exam, labs

    exam.guard_practice(args.lab)
    lab = _lab(args)
    n, text = labs.next_hint(lab)
    print(f"Hint {n}/{len(lab.hints)} for {lab.id}: {text}")


def cmd_reset(args):
    from . import labs

    lab = _lab(args)
    removed = labs.reset(lab, _cluster(args), clean=args.clean)
    kept = f" Your files were moved aside next to {lab.workdir}." if args.clean else ""
    print(f"Reset {lab.id}: removed {', '.join(removed) or 'nothing'}; setup applied again.{kept}")


def cmd_solve(args):
    from . import exam, labs

    exam.guard_practice(args.lab)
    lab = _lab(args)
    labs.solve(lab, _cluster(args))
    print(f"Applied the reference solution of {lab.id}. Check it with: ckalab check {lab.id}")


def cmd_workdir(args):
    print(_lab(args).workdir)


def cmd_notebooks(args):
    from pathlib import Path

    from . import notebook

    # Messages on stderr, the folder alone on stdout: `make lab` reads it.
    folder, messages = notebook.copy_notebooks(Path(args.dir) if args.dir else None)
    for m in messages:
        print(m, file=sys.stderr)
    print(folder)


def cmd_exam(args):
    from . import exam

    return {"start": exam_start, "status": exam_status, "task": exam_task, "finish": exam_finish}[args.action](
        args, exam)


def exam_start(args, exam):
    from . import render

    state = exam.start(_cluster(args), args.labs, args.count, args.duration, args.seed, args.force)
    print(render.exam_tasks_text(state, exam.PASS_MARK, task_labs=[exam.task_lab(t) for t in state["tasks"]]))
    print("The timer is running. Time left: ckalab exam status    Grade: ckalab exam finish")


def _exam_report(exam, report: dict, as_json: bool, over: str = "") -> int:
    import json

    from . import render

    print(json.dumps(report, indent=2) if as_json else
          f"{over}{render.exam_report_text(report)}\n\nReports: {exam.exam_dir()}/report.{{txt,json,xml}}")
    return 0 if report["total"]["passed"] else 1


def exam_status(args, exam):
    import json
    import time

    from . import render

    state, report = exam.status(_cluster(args))
    if report:
        return _exam_report(exam, report, args.json, "The exam is over.\n\n")
    print(json.dumps({"id": state["id"], "time_left_s": round(state["deadline"] - time.time()),
                      "tasks": len(state["tasks"])}) if args.json else render.exam_tasks_text(state, exam.PASS_MARK))
    return 0


def exam_task(args, exam):
    from . import render

    state = exam.current()
    task = exam.find_task(state, args.n)
    print(render.exam_task_text(state, task, exam.task_lab(task)))


def exam_finish(args, exam):
    return _exam_report(exam, exam.finish(_cluster(args)), args.json)


def cmd_submit(args):
    from . import render, results
    from .grading import printable

    b = results.submit(args.student, _cluster(args), args.out, args.key_file, args.labs, args.seed)
    print(render.bundle_text(b))
    print(f"Wrote {args.out} for {printable(b['student'], oneline=True)} ({len(b['labs'])} labs, signed). "
          "Hand this file in.")


def cmd_gradebook(args):
    from . import exports, render
    from .grading import printable

    book, notes = exports.gradebook_and_exports(args.dir, args.key_file, args.out, args.duplicates, args.seeds,
                                                args.per_check, args.canvas, args.canvas_template, args.moodle)
    print(render.gradebook_text(book))
    for n in notes:
        print(f"  canvas: {printable(n, oneline=True)}")
    return 1 if book.rejected or book.flagged() else 0


def cmd_gradescope_verify(args):
    from . import exports
    from .grading import printable

    res, written, unread = exports.gradescope_verify(args.bundle, args.key_file, args.out, args.labs, args.seeds,
                                                     args.metadata)
    if unread:
        print(unread, file=sys.stderr)
    print(printable(res["output"]))
    print(f"Wrote {written}: {res['score']} points, {len(res['tests'])} tests.")
    return 0 if exports.bundle_verified(res) else 1


def cmd_keygen(args):
    from . import results

    print(f"Wrote a new course key to {results.new_key(args.file)}: hand it to the students, keep a copy.")


def cmd_classroom(args):
    return {"up": classroom_up, "grade": classroom_grade, "down": classroom_down, "watch": classroom_watch,
            "evidence": classroom_evidence}[args.action](args)


def classroom_up(args):
    from . import classroom

    if not args.kubeconfig or not args.roster:
        raise CkalabError("classroom up needs --kubeconfig (the instructor's) and --roster (a CSV of students).")
    name = args.class_name
    st = classroom.up(args.kubeconfig, args.roster, name, args.labs, args.token_hours, args.server,
                      pod_security=args.pod_security)
    print(f"Classroom '{name}': {len(st['kubeconfigs'])} students ready, {len(st['failed'])} failed.")
    print(f"Labs per student: {', '.join(st['labs']) or 'none'}")
    for lab_id, why in st["excluded"].items():
        print(f"  not per student: {lab_id}: {why}")
    for sid, err in st["failed"].items():
        print(f"  FAILED {sid}: {err}")
    print(f"Hand out {classroom.classroom_dir(name)}/students/<id>/kubeconfig and tasks.md. "
          f"Grade: ckalab classroom grade --class {name}")
    return 1 if st["failed"] else 0


def classroom_grade(args):
    import time

    from . import classroom, render

    t0 = time.monotonic()
    book = classroom.grade(args.class_name, args.out, args.workers)
    print(f"Graded {len(book.rows)} students x {len(book.lab_ids)} labs in {time.monotonic() - t0:.1f}s")
    print(render.gradebook_text(book))


def classroom_down(args):
    from . import classroom

    gone = classroom.down(args.class_name)
    print(f"Deleted {len(gone)} namespaces/objects of classroom '{args.class_name}': {', '.join(gone) or 'nothing'}")


def classroom_watch(args):
    import time

    from . import dashboard

    w = dashboard.Watch(args.class_name, args.port, args.interval, args.workers).start()
    print(f"Class view of '{args.class_name}' on {w.url} (regraded every {args.interval:g} s); Ctrl-C stops it.",
          flush=True)
    try:
        deadline = time.monotonic() + args.duration if args.duration else None
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2 if deadline else 1)
    except KeyboardInterrupt:
        pass
    finally:
        w.stop()
    if args.export:
        if w.grid is None:
            raise CkalabError(f"Nothing was graded, so nothing was exported{': ' + w.error if w.error else ''}.")
        print(f"Wrote the last grid ({w.grid['graded_at']}) to {dashboard.export(w.grid, args.export)}")
    if w.error:
        print(f"The last round failed: {w.error}")


def classroom_evidence(args):
    from . import classroom, render

    if not args.audit_log:
        raise CkalabError("classroom evidence needs --audit-log (the API server's audit log, JSON lines).")
    ev = classroom.evidence(args.class_name, args.audit_log, args.student, args.lab)
    print(render.evidence_text(ev, classroom.EVIDENCE_CAVEAT, args.lab))


def parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The command line. With `verb`, only that verb's own options are filled in (the others'
    need modules a cold start of `verb` would otherwise import); without it, all of them."""
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

    def full(name: str) -> bool:
        return verb in (None, name)

    up = add("up", cmd_up, "start (or reuse) the lab cluster and wait until it is ready")
    from .cluster import BACKENDS

    up.add_argument("--backend", default="auto", choices=["auto", *BACKENDS])
    up.add_argument("--nodes", choices=["kwok", "real"], default=None,
                    help="local backend: kwok nodes and the control plane as processes (default) or, "
                         "EXPERIMENTAL, real nodes: a controlplane node running the control plane as static "
                         "pods and node01, each with kubelet + containerd (root; see docs/real-nodes.md); "
                         "the choice is kept for later `up`s")
    add("down", cmd_down, "stop the cluster (succeeds when already stopped)")
    add("status", cmd_status, "show the cluster and its components").add_argument("--json", action="store_true")
    add("kubeconfig", cmd_kubeconfig, "print the path of the lab's admin kubeconfig")
    add("node-file", cmd_node_file, "print a file of the cluster's control-plane node (a path as "
        "kubeadm lays it out, or relative to the PKI directory)").add_argument("path")
    ssh = add("ssh", cmd_ssh, "open a root shell on a node (real nodes: controlplane, node01), where "
              "/etc/kubernetes, crictl, etcdctl, kubeadm and 'systemctl restart kubelet' are as on a kubeadm node")
    ssh.add_argument("node", help="controlplane or node01")
    ssh.add_argument("command", nargs=argparse.REMAINDER, help="a command to run instead of a shell")
    add("restore-manifests", cmd_restore_manifests, "put ckalab's static pod manifests back on the "
        "controlplane node; edited ones are kept in <cluster>/manifests.edited/")
    priv = add("private-image", cmd_private_image, "publish an image in the cluster's private registry, "
               "pullable with a login only (real nodes; what the image-pull-secrets task is about)")
    priv.add_argument("image", help="HOST/PATH[:TAG], e.g. private-registry.io/apps/internal-app")
    priv.add_argument("--user", required=True)
    priv.add_argument("--password", required=True)
    priv.add_argument("--if-offered", action="store_true",
                      help="on a cluster without a private registry say so and succeed (lab setup scripts)")
    add("env", cmd_env, "print 'export KUBECONFIG=...' for a shell")
    add("labs", cmd_labs, "list the labs")
    add("validate", cmd_validate, "check every lab's data and report all problems")
    add("start", cmd_start, "set up a lab and print its task", lab=True)
    add("check", cmd_check, "grade a lab: exit 0 all pass, 1 some fail, 2 error", lab=True).add_argument(
        "--json", action="store_true")
    add("hint", cmd_hint, "show the next hint", lab=True)
    add("reset", cmd_reset, "remove the lab's objects and set it up again", lab=True).add_argument(
        "--clean", action="store_true", help="also move your files in the work directory aside (never deleted)")
    add("solve", cmd_solve, "apply the reference solution (instructors, tests)", lab=True)
    add("workdir", cmd_workdir, "print the lab's work directory", lab=True)

    add("notebooks", cmd_notebooks, "copy the notebooks to your own folder (never over your edits) and print it"
        ).add_argument("--dir", help="where (default: $CKALAB_HOME/notebooks)")
    ex = add("exam", cmd_exam, "mock exam: start, status, task N, finish (no feedback until the end)")
    if full("exam"):
        _exam_options(ex)
    sb = add("submit", cmd_submit, "grade your labs and write a signed result bundle for the instructor")
    gb = add("gradebook", cmd_gradebook, "verify result bundles and write gradebook.csv and JUnit XML")
    gs = add("gradescope-verify", cmd_gradescope_verify,
             "verify one uploaded bundle and write Gradescope's results.json (in a Gradescope autograder)")
    if full("submit") or full("gradebook") or full("gradescope-verify"):
        _result_options(sb, gb, gs)
    add("keygen", cmd_keygen, "write a new random course key (instructors)").add_argument("file")
    cr = add("classroom", cmd_classroom, "a workshop on a shared cluster: up, grade, watch (live class view), "
             "evidence (audit-log timelines), down")
    if full("classroom"):
        _classroom_options(cr)
    return p


def _exam_options(ex) -> None:
    from . import exam

    ex.add_argument("action", choices=["start", "status", "task", "finish"])
    ex.add_argument("n", nargs="?", type=int, default=1, help="task number (for 'task')")
    ex.add_argument("--count", type=int, help="number of labs, picked at random (default: all)")
    ex.add_argument("--labs", nargs="+", help="these labs instead of a random pick")
    ex.add_argument("--duration", type=float, default=exam.DEFAULT_DURATION, help="minutes (default 120)")
    ex.add_argument("--seed", default=os.environ.get("CKALAB_SEED"), help="variant seed or student id")
    ex.add_argument("--force", action="store_true", help="start anew even if an exam is running")
    ex.add_argument("--json", action="store_true")


def _result_options(sb, gb, gs) -> None:
    from . import exports, results

    sb.add_argument("--student", required=True, help="your student id")
    sb.add_argument("--key-file", help=f"course key from the instructor (default ${results.KEY_ENV})")
    sb.add_argument("--out", required=True, help="bundle file to write (JSON)")
    sb.add_argument("--labs", nargs="+", help="labs to grade (default: every lab started here)")
    sb.add_argument("--seed", help="override the seed recorded when each lab was started")
    gb.add_argument("dir", help="directory of *.json bundles")
    gb.add_argument("--key-file", help=f"the course key (default ${results.KEY_ENV})")
    gb.add_argument("--out", help="where to write the gradebook (default: DIR)")
    gb.add_argument("--duplicates", default="flag", choices=results.DUPLICATE_RULES,
                    help="a student's lab submitted more than once: flag (default: keep the newest, list both "
                         "and exit 1), newest, or best (highest percentage)")
    gb.add_argument("--seeds", default="any", choices=results.SEED_RULES,
                    help="student: each lab's seed must be the student's id (variants per student)")
    gb.add_argument("--per-check", action="store_true",
                    help="also a column per check (lab/check) in gradebook.csv and moodle.csv")
    gb.add_argument("--canvas", action="store_true", help="also write canvas.csv for Canvas's Gradebook import")
    gb.add_argument("--canvas-template", metavar="EXPORT.csv",
                    help="your Canvas gradebook export: canvas.csv fills in its lab columns (implies --canvas)")
    gb.add_argument("--moodle", nargs="?", const="username", choices=exports.MOODLE_IDS,
                    help="also write moodle.csv for Moodle's CSV grade import, the student id in a column "
                         "username (default), email or idnumber")
    gs.add_argument("bundle", help="the bundle, or the submission directory holding exactly one .json")
    gs.add_argument("--key-file", help=f"the course key (default ${results.KEY_ENV})")
    gs.add_argument("--out", default="/autograder/results/results.json", help="where to write results.json")
    gs.add_argument("--labs", nargs="+", help="the labs this assignment counts (default: those in the bundle)")
    gs.add_argument("--seeds", default="any", choices=results.SEED_RULES)
    gs.add_argument("--metadata", help="Gradescope's submission_metadata.json: the bundle's student must be "
                                       "the submitter (by sid or email)")


def _classroom_options(cr) -> None:
    cr.add_argument("action", choices=["up", "grade", "watch", "evidence", "down"])
    cr.add_argument("--class", dest="class_name", default="workshop", help="class name (namespace prefix)")
    cr.add_argument("--kubeconfig", help="instructor's kubeconfig of the shared cluster (up)")
    cr.add_argument("--roster", help="CSV with a 'student' column (up)")
    cr.add_argument("--labs", nargs="+", help="labs to run per student (default: every one that qualifies)")
    cr.add_argument("--token-hours", type=float, default=12, help="lifetime of the students' tokens (up)")
    cr.add_argument("--server", help="API server URL for the students' kubeconfigs (up; default: the instructor's)")
    cr.add_argument("--pod-security", default="baseline", help="Pod Security level enforced in the student "
                    "namespaces: baseline (default), restricted, privileged or none (up)")
    cr.add_argument("--out", help="gradebook directory (grade)")
    cr.add_argument("--workers", type=int, default=8, help="concurrent graders (grade, watch)")
    cr.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 for the class view (watch; 0: any free)")
    cr.add_argument("--interval", type=float, default=5.0, help="seconds between regrades (watch)")
    cr.add_argument("--export", help="when the view stops, write its last grid here: .csv or .html (watch)")
    cr.add_argument("--duration", type=float, help="stop the view after this many seconds (watch; default: Ctrl-C)")
    cr.add_argument("--audit-log", help="the API server's audit log, JSON lines (evidence)")
    cr.add_argument("--student", help="only this student (evidence)")
    cr.add_argument("--lab", help="only the calls on this lab's kinds of objects (evidence)")


def _verb(argv: list[str]) -> str | None:
    """The verb about to run (the first word that is not an option), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    """Run one verb; its exit code. As the program itself (no `argv`), the process ends here."""
    if argv is None:
        code = _main(sys.argv[1:])
        _exit_now(code)
        return code
    return _main(list(argv))


def _exit_now(code: int) -> None:
    """End the process at once when nothing else runs. Python's orderly shutdown (tearing down
    every module, the Kubernetes client's thousands of classes included) was about a fifth of a
    cold `ckalab check`. atexit handlers still run first (the client removes its temporary
    certificate files there); with another thread alive the normal exit waits for it instead."""
    import threading

    if threading.active_count() > 1:
        return
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # the reader has gone (`| head`) or the stream is closed
            pass
    os._exit(code)


def _main(argv: list[str]) -> int:
    args = parser(_verb(argv)).parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except CkalabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (`ckalab labs | head`) has gone: stop quietly. Point stdout at /dev/null so
        # the interpreter's final flush does not raise again, and exit as a SIGPIPE death would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
