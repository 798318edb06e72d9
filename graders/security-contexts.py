"""Grader for security-contexts: judges each container's *effective* settings (a container's
securityContext field wins over the pod's), so any correct placement passes.

Capability names are judged as containerd (kind, kubeadm's usual runtime) applies them: it
upper-cases each name and prefixes CAP_, so `sys_time` works but `CAP_SYS_TIME` becomes
CAP_CAP_SYS_TIME, which runc ignores as unknown: the container silently lacks the capability.
That is why a CAP_ prefix fails here rather than passing with a warning. Individual drops are
applied after the adds, while `drop: [ALL]` is applied first, as containerd does.

On backends with a container runtime (kind) two more checks exec into the containers and read
the real uid and capability set. The local backend cannot exec; there those checks are skipped
before they run, so they are not listed and their points are not part of the maximum: nothing
claims a runtime confirmation that did not happen.
"""

import pytest

from ckalab.grading import check, expect, fail

CAPS = ("SYS_TIME", "NET_ADMIN")
CAP_BITS = {"SYS_TIME": 25, "NET_ADMIN": 12}  # bit numbers in /proc/<pid>/status CapEff
EXEC_BACKENDS = ("kind",)


def _pod(kube, lab, key):
    p = lab.params
    return kube.get("v1", "Pod", p[key], p["namespace"])


def _recreate(p, key):
    name = p[key]
    return (f"A Pod's securityContext cannot be changed in place: kubectl get pod {name} -n {p['namespace']} -o yaml "
            f"> {name}.yaml, edit it, then kubectl replace --force -f {name}.yaml")


def effective_user(pod, container) -> tuple[int | None, str]:
    """(runAsUser, where it comes from): the container's own value wins over the pod's."""
    own = (container.get("securityContext") or {}).get("runAsUser")
    if own is not None:
        return own, "container"
    inherited = (pod["spec"].get("securityContext") or {}).get("runAsUser")
    return (inherited, "pod") if inherited is not None else (None, "")


def _container(pod, name):
    return next((c for c in pod["spec"]["containers"] if c["name"] == name), None)


def _user_problem(pod, container, expected) -> str | None:
    uid, where = effective_user(pod, container)
    if uid == expected:
        return None
    pname, cname = pod["metadata"]["name"], container["name"]
    if uid is None:
        return (f"Pod '{pname}': container '{cname}' has no runAsUser in its own or the pod's securityContext, so it "
                f"runs as the image's user (root for ubuntu); expected {expected}.")
    src = "its own securityContext" if where == "container" else "the pod's securityContext"
    return f"Pod '{pname}': container '{cname}' runs as user {uid} (from {src}); expected {expected}."


def cap_problem(container) -> str | None:
    """Why this container would not end up with SYS_TIME and NET_ADMIN (None: it would)."""
    sc = container.get("securityContext") or {}
    caps = sc.get("capabilities") or {}
    add, drop = caps.get("add") or [], caps.get("drop") or []
    name = f"container '{container['name']}'"
    prefixed = [c for c in add if c.upper().startswith("CAP_")]
    if prefixed:
        return (f"{name} adds {prefixed}: write capability names without the CAP_ prefix "
                f"({[c[4:].upper() for c in prefixed]}). The runtime adds the prefix itself, so containerd would "
                f"look for CAP_{prefixed[0].upper()} and the container would silently not get it.")
    privileged = " (privileged: true would grant every capability, far more than asked)" if sc.get("privileged") else ""
    if not add:
        return (f"{name} adds no capabilities{privileged}. Capabilities exist only in a container's securityContext: "
                "capabilities: {add: [\"SYS_TIME\", \"NET_ADMIN\"]}. The pod-level securityContext has no "
                "capabilities field: kubectl refuses it as an unknown field, and with --validate=false the API "
                "server silently drops it.")
    added = {c.upper() for c in add} - {c.upper() for c in drop if c.upper() != "ALL"}
    missing = [c for c in CAPS if c not in added]
    if not missing:
        return None
    dropped = [c for c in missing if c in {d.upper() for d in drop}]
    if dropped:
        return (f"{name} adds {add} but also drops {dropped}: individual drops apply after the adds (only "
                "drop: [ALL] is applied first). Remove them from drop.")
    return f"{name} adds {add}; missing: {', '.join(missing)}{privileged}."


# --- web pod: one user, wherever it is set ------------------------------------------------------

@check(1, "web pod exists", hint="kubectl get pod NAME")
def test_web_pod_exists(kube, lab):
    p = lab.params
    expect(_pod(kube, lab, "web_pod"), f"Pod '{p['web_pod']}' not found in namespace '{p['namespace']}' (the lab "
           f"created it). Create it again running ubuntu with sleep 3600, or run: ckalab reset security-contexts")


@check(3, "web pod's processes run as the requested user", after="test_web_pod_exists",
       hint="kubectl get pod NAME -o yaml: look at spec.securityContext and spec.containers[].securityContext")
def test_web_pod_user(kube, lab):
    p = lab.params
    pod = _pod(kube, lab, "web_pod")
    problems = [m for c in pod["spec"]["containers"] if (m := _user_problem(pod, c, p["web_uid"]))]
    expect(not problems, "\n".join(problems + [_recreate(p, "web_pod")]))


# --- multi-container pod: inherit and override -----------------------------------------------------

@check(2, "multi-container pod exists with both containers",
       hint="kubectl get pod NAME -o jsonpath='{.spec.containers[*].name}'")
def test_multi_pod_exists(kube, lab):
    p = lab.params
    pod = _pod(kube, lab, "multi_pod")
    expect(pod, f"Pod '{p['multi_pod']}' not found in namespace '{p['namespace']}'. Create it with two containers, "
           f"'{p['web_container']}' and '{p['sidecar_container']}' (image ubuntu, sleep 3600).")
    names = [c["name"] for c in pod["spec"]["containers"]]
    missing = [n for n in (p["web_container"], p["sidecar_container"]) if n not in names]
    expect(not missing,
           f"Pod '{p['multi_pod']}' has containers {names}; missing {missing}. {_recreate(p, 'multi_pod')}")


@check(2, "multi-container pod sets the user at pod level", after="test_multi_pod_exists",
       hint="kubectl get pod NAME -o jsonpath='{.spec.securityContext}'")
def test_multi_pod_user(kube, lab):
    p = lab.params
    uid = (_pod(kube, lab, "multi_pod")["spec"].get("securityContext") or {}).get("runAsUser")
    expect(uid == p["pod_uid"],
           f"Pod '{p['multi_pod']}': the pod-level securityContext (spec.securityContext) has runAsUser {uid}; "
           f"expected {p['pod_uid']}, which every container inherits unless it sets its own. "
           f"{_recreate(p, 'multi_pod')}")


@check(2, "the overriding container runs as its own user", after="test_multi_pod_exists",
       hint="kubectl get pod NAME -o jsonpath='{.spec.containers[*].securityContext}'")
def test_multi_web_user(kube, lab):
    p = lab.params
    pod = _pod(kube, lab, "multi_pod")
    c = _container(pod, p["web_container"])
    uid, where = effective_user(pod, c)
    if uid != p["container_uid"] and where == "pod":
        fail(f"Pod '{p['multi_pod']}': container '{c['name']}' inherits user {uid} from the pod; expected "
             f"{p['container_uid']}. Set runAsUser: {p['container_uid']} in the securityContext of container "
             f"'{c['name']}' (a container's value overrides the pod's). {_recreate(p, 'multi_pod')}")
    problem = _user_problem(pod, c, p["container_uid"])
    expect(not problem, f"{problem} {_recreate(p, 'multi_pod')}")


@check(2, "the other container inherits the pod's user", after="test_multi_pod_exists",
       hint="kubectl get pod NAME -o jsonpath='{.spec.containers[*].securityContext}'")
def test_multi_sidecar_user(kube, lab):
    p = lab.params
    pod = _pod(kube, lab, "multi_pod")
    c = _container(pod, p["sidecar_container"])
    uid, where = effective_user(pod, c)
    if uid != p["pod_uid"] and where == "container":
        fail(f"Pod '{p['multi_pod']}': container '{c['name']}' sets its own runAsUser {uid}, which overrides the "
             f"pod's; expected it to keep the pod-level user {p['pod_uid']}. Remove runAsUser from the securityContext "
             f"of container '{c['name']}'. {_recreate(p, 'multi_pod')}")
    problem = _user_problem(pod, c, p["pod_uid"])
    expect(not problem, f"{problem} {_recreate(p, 'multi_pod')}")


# --- capabilities --------------------------------------------------------------------------------

@check(1, "capabilities pod exists", hint="kubectl get pod NAME")
def test_cap_pod_exists(kube, lab):
    p = lab.params
    expect(_pod(kube, lab, "cap_pod"), f"Pod '{p['cap_pod']}' not found in namespace '{p['namespace']}' (the lab "
           f"created it). Create it again running ubuntu with sleep 4800, or run: ckalab reset security-contexts")


@check(3, "its container adds SYS_TIME and NET_ADMIN", after="test_cap_pod_exists",
       hint="kubectl get pod NAME -o jsonpath='{.spec.containers[*].securityContext.capabilities}'")
def test_capabilities(kube, lab):
    p = lab.params
    pod = _pod(kube, lab, "cap_pod")
    problems = [m for c in pod["spec"]["containers"] if (m := cap_problem(c))]
    expect(not problems, f"Pod '{p['cap_pod']}': " + "\n".join(problems + [_recreate(p, "cap_pod")]))


# --- runtime confirmation (backends with exec only) ----------------------------------------------

@pytest.fixture
def exec_in(cluster, kube):
    """Run a command in a container; skips the check (so it is not listed) where exec is impossible.

    These checks have no `after=`: the engine would report "Not checked yet" for them before this
    skip could happen, listing a check the local backend can never run. They compare with the
    spec-level checks themselves instead (see _spec_first)."""
    if cluster.backend not in EXEC_BACKENDS:
        pytest.skip(f"the {cluster.backend} backend has no container runtime to exec into")
    from kubernetes.stream import stream

    def run(pod, container, command):
        phase = (pod.get("status") or {}).get("phase")
        expect(phase == "Running", f"Pod '{pod['metadata']['name']}' is {phase}, not Running, so its container "
               f"'{container}' cannot be inspected yet. Look: kubectl describe pod {pod['metadata']['name']}")
        return stream(kube.core.connect_get_namespaced_pod_exec, pod["metadata"]["name"],
                      pod["metadata"]["namespace"], container=container, command=command, stderr=True,
                      stdin=False, stdout=True, tty=False, _request_timeout=5)
    return run


def _spec_first(problems, title):
    expect(not any(problems), f"Not checked yet: first fix \"{title}\".")


@check(2, "the running containers really use those users (id -u)",
       hint="kubectl exec POD -c CONTAINER -- id -u")
def test_running_users(kube, lab, exec_in):
    p = lab.params
    web, multi = _pod(kube, lab, "web_pod"), _pod(kube, lab, "multi_pod")
    expect(web and multi, "Not checked yet: first create both pods.")
    expected = [(web, c["name"], p["web_uid"]) for c in web["spec"]["containers"]]
    expected += [(multi, p["web_container"], p["container_uid"]), (multi, p["sidecar_container"], p["pod_uid"])]
    _spec_first([not _container(pod, n) or _user_problem(pod, _container(pod, n), uid) for pod, n, uid in expected],
                "the users in the pod specs")
    for pod, name, uid in expected:
        out = exec_in(pod, name, ["id", "-u"]).strip()
        expect(out == str(uid), f"Pod '{pod['metadata']['name']}': `id -u` in container '{name}' prints '{out}'; "
               f"expected {uid}.")


@check(2, "the running container really has the capabilities (CapEff)",
       hint="kubectl exec POD -- grep Cap /proc/1/status")
def test_running_capabilities(kube, lab, exec_in):
    pod = _pod(kube, lab, "cap_pod")
    expect(pod, "Not checked yet: first create the pod.")
    _spec_first([cap_problem(c) for c in pod["spec"]["containers"]], "its container adds SYS_TIME and NET_ADMIN")
    for c in pod["spec"]["containers"]:
        out = exec_in(pod, c["name"], ["grep", "CapEff", "/proc/1/status"])
        try:
            eff = int(out.split()[-1], 16)
        except (ValueError, IndexError):
            fail(f"Could not read CapEff in container '{c['name']}' (got {out!r}).")
        lacking = [cap for cap, bit in CAP_BITS.items() if not eff >> bit & 1]
        uid = effective_user(pod, c)[0]
        why = (f" A process running as user {uid} (not root) gets no effective capabilities from add; leave "
               "runAsUser out of this pod.") if uid else ""
        expect(not lacking, f"Pod '{pod['metadata']['name']}': the process in container '{c['name']}' lacks "
               f"{', '.join(lacking)} (CapEff {eff:#x}).{why}")
