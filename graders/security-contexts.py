"""Grader for security-contexts: judges each container's *effective* settings (a container's
securityContext field wins over the pod's), so any correct placement passes.

Capability names are judged as containerd (kind, kubeadm's usual runtime) applies them: it
upper-cases each name and prefixes CAP_, so `sys_time` works but `CAP_SYS_TIME` becomes
CAP_CAP_SYS_TIME, which runc ignores as unknown: the container silently lacks the capability.
That is why a CAP_ prefix fails here rather than passing with a warning. Individual drops are
applied after the adds, while `drop: [ALL]` is applied first, as containerd does.

Added capabilities reach only a process running as root: for any other user the kernel clears
them at exec, because Kubernetes sets no ambient capabilities. So a capabilities container
that runs as a non-root user fails, as does one that can never start (runAsNonRoot with the
root-user ubuntu image). "Without extra privileges" is judged too: privileged: true, add: [ALL],
other capabilities beyond the runtime's defaults, or the node's namespaces (hostNetwork,
hostPID, hostIPC) fail the extra-privileges check even though the two asked for are included.

Capabilities are read, never exercised: the runtime check greps CapEff in /proc/1/status. With
SYS_TIME a container could set the clock of the machine itself (the clock is not namespaced).

Where containers really run (kind, and the local backend's real nodes) two more checks exec
into the containers and read the real uid and capability set; a pod created moments ago gets a
few seconds to start first, and one that cannot start (an image that is not pulled, a crashing
command) is named with its reason. On kwok nodes nothing runs; there those checks skip
themselves before they run, so their points are not part of the maximum: nothing claims a
runtime confirmation that did not happen.
"""

from ckalab.grading import check, expect, fail, fixture, skip
from ckalab.waiting import WaitTimeout, wait_for

CAPS = ("SYS_TIME", "NET_ADMIN")
# What containerd (and Docker) give every container anyway: adding one of these is no extra privilege.
RUNTIME_DEFAULT_CAPS = {"CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID",
                        "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"}
HOST_NAMESPACES = ("hostNetwork", "hostPID", "hostIPC")
CAP_BITS = {"SYS_TIME": 25, "NET_ADMIN": 12}  # bit numbers in /proc/<pid>/status CapEff
# How long a container that is still starting (a pod created just before the check) is waited for.
START_SECONDS = 10
# Waiting reasons of a container that is not about to start (anything else: still starting).
STARTING = {"ContainerCreating", "PodInitializing"}


def _pod(kube, lab, key):
    p = lab.params
    return kube.get("v1", "Pod", p[key], p["namespace"])


def _recreate(p, key):
    """How to look, and the fact that decides how to change it (the steps are in the hints)."""
    name = p[key]
    return (f"Look: kubectl get pod {name} -n {p['namespace']} -o yaml. A Pod's securityContext cannot be changed "
            "in place.")


def _missing(p, key):
    return (f"Pod '{p[key]}' not found in namespace '{p['namespace']}' (kubectl get pods -n {p['namespace']}); the "
            "lab created it, and ckalab reset security-contexts sets it up again.")


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


def _effective(pod, container, field):
    """A securityContext field as the container gets it: its own value, else the pod's."""
    own = (container.get("securityContext") or {}).get(field)
    return own if own is not None else (pod["spec"].get("securityContext") or {}).get(field)


def _cap_lists(container) -> tuple[list, list]:
    caps = (container.get("securityContext") or {}).get("capabilities") or {}
    return [str(c) for c in caps.get("add") or []], [str(c) for c in caps.get("drop") or []]


def cap_problem(pod, container) -> str | None:
    """Why this container would not end up with SYS_TIME and NET_ADMIN (None: it would)."""
    add, drop = _cap_lists(container)
    name = f"container '{container['name']}'"
    prefixed = [c for c in add if c.upper().startswith("CAP_")]
    if prefixed:
        return (f"{name} adds {prefixed}: containerd puts CAP_ in front of every name itself, so it would look "
                f"for CAP_{prefixed[0].upper()}, which does not exist, and the container would silently not get it.")
    privileged = (" (privileged: true does grant them, but together with every other capability)"
                  if (container.get("securityContext") or {}).get("privileged") else "")
    if not add:
        return (f"{name} adds no capabilities{privileged}. The pod-level securityContext has no capabilities "
                "field: kubectl refuses it as an unknown field, and with --validate=false the API server silently "
                "drops it. Look: kubectl explain pod.spec.containers.securityContext.capabilities")
    uid, where = effective_user(pod, container)
    if uid:
        return (f"{name} runs as user {uid} (from the {where}'s securityContext): capabilities added to a non-root "
                "process are cleared when it starts (Kubernetes gives it no ambient capabilities), so it would run "
                "without SYS_TIME and NET_ADMIN.")
    if _effective(pod, container, "runAsNonRoot"):
        who = "runAsUser 0" if uid == 0 else "no runAsUser, and the ubuntu image's user is root"
        return (f"{name} has runAsNonRoot: true with {who}, so the kubelet would refuse to start it "
                "(CreateContainerConfigError).")
    adds, drops = {c.upper() for c in add}, {d.upper() for d in drop} - {"ALL"}
    missing = [c for c in CAPS if c in drops or not (c in adds or "ALL" in adds)]
    if not missing:
        return None
    dropped = [c for c in missing if c in drops]
    if dropped:
        return (f"{name} adds {add} but also drops {dropped}: individual drops apply after the adds (only "
                "drop: [ALL] is applied first).")
    return f"{name} adds {add}; missing: {', '.join(missing)}."


def extra_privilege_problems(pod) -> list[str]:
    """What the pod gets beyond SYS_TIME and NET_ADMIN: the task asks for those two only."""
    hosts = [f"{h}: true" for h in HOST_NAMESPACES if pod["spec"].get(h)]
    problems = [f"the pod shares the node's namespaces ({', '.join(hosts)})"] if hosts else []
    for c in pod["spec"]["containers"]:
        sc, name = c.get("securityContext") or {}, f"container '{c['name']}'"
        adds = {a.upper() for a in _cap_lists(c)[0]}
        if sc.get("privileged"):
            problems.append(f"{name} is privileged: true, which gives it every capability and the node's devices")
        if "ALL" in adds:
            problems.append(f"{name} adds ALL, which is every capability")
        # CAP_-prefixed names are ignored by the runtime (see cap_problem), so they grant nothing.
        extra = sorted(a for a in adds - set(CAPS) - RUNTIME_DEFAULT_CAPS - {"ALL"} if not a.startswith("CAP_"))
        if extra:
            problems.append(f"{name} also adds {extra}")
    return problems


# --- web pod: one user, wherever it is set ------------------------------------------------------

@check(1, "web pod exists", hint="kubectl get pod NAME")
def test_web_pod_exists(kube, lab):
    p = lab.params
    expect(_pod(kube, lab, "web_pod"), _missing(p, "web_pod"))


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
    expect(pod, f"Pod '{p['multi_pod']}' not found in namespace '{p['namespace']}' "
           f"(kubectl get pods -n {p['namespace']}).")
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
             f"{p['container_uid']} for this container alone, while the pod's user stays {p['pod_uid']}. "
             f"{_recreate(p, 'multi_pod')}")
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
             f"pod's; expected it to keep the pod-level user {p['pod_uid']}. {_recreate(p, 'multi_pod')}")
    problem = _user_problem(pod, c, p["pod_uid"])
    expect(not problem, f"{problem} {_recreate(p, 'multi_pod')}")


# --- capabilities --------------------------------------------------------------------------------

@check(1, "capabilities pod exists", hint="kubectl get pod NAME")
def test_cap_pod_exists(kube, lab):
    p = lab.params
    expect(_pod(kube, lab, "cap_pod"), _missing(p, "cap_pod"))


@check(3, "its container adds SYS_TIME and NET_ADMIN", after="test_cap_pod_exists",
       hint="kubectl get pod NAME -o jsonpath='{.spec.containers[*].securityContext.capabilities}'")
def test_capabilities(kube, lab):
    p = lab.params
    pod = _pod(kube, lab, "cap_pod")
    problems = [m for c in pod["spec"]["containers"] if (m := cap_problem(pod, c))]
    expect(not problems, f"Pod '{p['cap_pod']}': " + "\n".join(problems + [_recreate(p, "cap_pod")]))


@check(2, "and nothing beyond them: not privileged, no other capabilities", after="test_cap_pod_exists",
       hint="kubectl get pod NAME -o jsonpath='{.spec.containers[*].securityContext}'")
def test_no_extra_privileges(kube, lab):
    p = lab.params
    problems = extra_privilege_problems(_pod(kube, lab, "cap_pod"))
    expect(not problems, f"Pod '{p['cap_pod']}': " + "; ".join(problems) + ". The task asks for SYS_TIME and "
           f"NET_ADMIN only. {_recreate(p, 'cap_pod')}")


# --- runtime confirmation (backends with exec only) ----------------------------------------------

def _container_state(pod, name) -> tuple[str, str]:
    """("running" | "starting" | "stuck", why) for container `name` as the pod's status has it."""
    status = next((c for c in (pod.get("status") or {}).get("containerStatuses") or [] if c.get("name") == name), None)
    state = (status or {}).get("state") or {}
    if "running" in state:
        return "running", ""
    waiting, ended = state.get("waiting") or {}, state.get("terminated") or {}
    if ended:
        return "stuck", f"exited ({ended.get('reason', 'exit code ' + str(ended.get('exitCode')))})"
    if waiting and waiting.get("reason") not in STARTING:
        why = waiting.get("reason", "waiting")
        return "stuck", f"{why}: {waiting['message'][:160]}" if waiting.get("message") else why
    return "starting", waiting.get("reason") or (pod.get("status") or {}).get("phase") or "Pending"


@fixture
def exec_in(cluster, kube):
    """Run a command in a container; skips the check (not scored) where exec is impossible.

    These checks have no `after=`: the engine would report "Not checked yet" for them before this
    skip could happen, as if kwok nodes could ever run them. They compare with the spec-level
    checks themselves instead (see _spec_first)."""
    if not cluster.offers("exec"):
        skip(f"the {cluster.backend} backend has no container runtime to exec into")

    def run(pod, container, command):
        name, ns = pod["metadata"]["name"], pod["metadata"]["namespace"]

        def settled():  # the pod as it is now, once its container runs or cannot start
            now = kube.get("v1", "Pod", name, ns) or pod
            return now if _container_state(now, container)[0] != "starting" else None
        try:
            pod = settled() or wait_for(settled, START_SECONDS, f"container '{container}' of pod '{name}' to start", 0.5)
        except WaitTimeout:
            fail(f"Pod '{name}': container '{container}' has not started within {START_SECONDS} s "
                 f"({_container_state(kube.get('v1', 'Pod', name, ns) or pod, container)[1]}), so it cannot be "
                 f"inspected yet. Look: kubectl get pod {name} -n {ns}; kubectl describe pod {name} -n {ns}")
        state, why = _container_state(pod, container)
        expect(state == "running", f"Pod '{name}': container '{container}' does not run ({why}), so `{' '.join(command)}` "
               f"cannot be run in it. Look: kubectl describe pod {name} -n {ns}")
        return kube.exec(name, ns, container, command)
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
    _spec_first([cap_problem(pod, c) for c in pod["spec"]["containers"]], "its container adds SYS_TIME and NET_ADMIN")
    for c in pod["spec"]["containers"]:
        out = exec_in(pod, c["name"], ["grep", "CapEff", "/proc/1/status"])
        try:
            eff = int(out.split()[-1], 16)
        except (ValueError, IndexError):
            fail(f"Could not read CapEff in container '{c['name']}' (got {out!r}).")
        lacking = [cap for cap, bit in CAP_BITS.items() if not eff >> bit & 1]
        expect(not lacking, f"Pod '{pod['metadata']['name']}': the process in container '{c['name']}' lacks "
               f"{', '.join(lacking)} (CapEff {eff:#x}). Look: kubectl exec {pod['metadata']['name']} -c {c['name']} "
               "-- grep Cap /proc/1/status")
