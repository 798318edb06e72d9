"""security-contexts grader: effective settings decide, so every correct placement passes; the
usual mistakes (pod-level capabilities, CAP_ names, wrong inheritance) fail with pinned messages.

The same cases run on real nodes (test_security_contexts_real.py), where the two exec checks run
too: `id -u` and CapEff inside the running containers."""

import json

from conftest import check_of
from conftest import failed_ids as _failed_ids

LAB = "security-contexts"
RECREATE = "Look: kubectl get pod {0} -n default -o yaml. A Pod's securityContext cannot be changed in place."
EXEC_CHECKS = {"test_running_users", "test_running_capabilities"}


def graded(r) -> set:
    """Checks that ran: on kwok nodes the exec checks are listed as unavailable."""
    return {c.id for c in r.checks if getattr(c, "state", "") != "unavailable"}


def failed_ids(r) -> set:
    """Failed checks, without an exec check that waits for the spec checks ("Not checked yet"):
    on real nodes it is there, on kwok nodes unavailable; the spec check names the mistake."""
    return {i for i in _failed_ids(r) & graded(r)
            if not (i in EXEC_CHECKS and check_of(r, i).message.startswith("Not checked yet"))}


def pod(name, containers, pod_sc=None, seconds=3600):
    """A Pod manifest (JSON is YAML): containers is [(name, securityContext or None)]."""
    spec = {"containers": [{"name": n, "image": "ubuntu", "command": ["sleep", str(seconds)],
                            **({"securityContext": sc} if sc else {})} for n, sc in containers]}
    if pod_sc:
        spec["securityContext"] = pod_sc
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                       "spec": spec})


def replace(h, manifest, *flags):
    """Delete and recreate, as the learner must for a Pod (kubectl replace --force)."""
    h.kubectl("replace", "--force", "--grace-period=1", *flags, "-f", "-", input=manifest)


def web_pod(h, pod_sc=None, container_sc=None):
    replace(h, pod("web-pod", [("web-pod", container_sc)], pod_sc))


def multi_pod(h, pod_sc={"runAsUser": 1001}, web_sc={"runAsUser": 1002}, sidecar_sc=None, names=("web", "sidecar")):
    h.apply(pod("multi-pod", [(names[0], web_sc), (names[1], sidecar_sc)], pod_sc))


def cap_pod(h, sc, *flags, pod_sc=None):
    replace(h, pod("ubuntu-sleeper", [("ubuntu-sleeper", sc)], pod_sc, seconds=4800), *flags)


def caps_graded(h, sc, fails=("test_capabilities",), pod_sc=None):
    """Everything else solved, the capabilities pod with `sc`: the result, failing exactly `fails`."""
    solve_all_but(h, "caps")
    cap_pod(h, sc, pod_sc=pod_sc)
    r = h.grade()
    assert failed_ids(r) == set(fails), r.render()
    return r


def solve_all_but(h, skip):
    """Everything right except the part named in skip (web, multi, caps)."""
    if skip != "web":
        web_pod(h, pod_sc={"runAsUser": 1001})
    if skip != "multi":
        multi_pod(h)
    if skip != "caps":
        cap_pod(h, {"capabilities": {"add": ["SYS_TIME", "NET_ADMIN"]}})


def test_fresh_start_fails_naming_unfinished_checks(lab_harness):
    h = lab_harness(LAB)
    r = h.grade()
    # The two pods setup creates exist, and the capabilities pod has no extra privileges yet.
    assert not r.passed and r.score == 4
    assert failed_ids(r) == graded(r) - EXEC_CHECKS - {"test_web_pod_exists", "test_cap_pod_exists",
                                                       "test_no_extra_privileges"}
    assert check_of(r, "test_web_pod_user").message == (
        "Pod 'web-pod': container 'web-pod' has no runAsUser in its own or the pod's securityContext, so it runs as "
        "the image's user (root for ubuntu); expected 1001.\n" + RECREATE.format("web-pod"))
    assert check_of(r, "test_multi_pod_exists").message == (
        "Pod 'multi-pod' not found in namespace 'default' (kubectl get pods -n default).")
    assert check_of(r, "test_multi_sidecar_user").message == (
        'Not checked yet: first fix "multi-container pod exists with both containers".')
    assert check_of(r, "test_capabilities").message.startswith(
        "Pod 'ubuntu-sleeper': container 'ubuntu-sleeper' adds no capabilities.")


def test_reference_solution_passes(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    r = h.grade()
    assert r.passed, r.render()
    if h.cluster.offers("exec"):  # real nodes: id -u and CapEff read in the running containers
        assert EXEC_CHECKS <= graded(r) and r.score == r.max_score == 22
    else:  # kwok nodes cannot exec: the runtime checks are not run, not passed for free
        assert not EXEC_CHECKS & graded(r) and r.score == r.max_score == 18


def test_seeded_variant_solution_passes(lab_harness):
    h = lab_harness(LAB, seed="7")
    h.solve()
    assert h.grade().passed  # the variant's pods carry the lab label: the next reset removes them


def test_container_level_user_reordered_caps_and_drop_all_pass(lab_harness):
    """runAsUser on web-pod's container instead of the pod; the sidecar repeating the pod's user;
    capabilities in another order, lower case, with drop: [ALL]."""
    h = lab_harness(LAB)
    web_pod(h, container_sc={"runAsUser": 1001, "allowPrivilegeEscalation": False})
    multi_pod(h, sidecar_sc={"runAsUser": 1001})
    cap_pod(h, {"capabilities": {"add": ["net_admin", "SYS_TIME"], "drop": ["ALL"]}})
    r = h.grade()
    assert r.passed, r.render()


def test_edit_from_dumped_yaml_passes(lab_harness):
    """The hint's route: dump the live pod, add the setting, replace --force."""
    h = lab_harness(LAB)
    h.sh("kubectl get pod web-pod -o yaml > web-pod.yaml && "
         "python -c \"import yaml; d = yaml.safe_load(open('web-pod.yaml')); "
         "d['spec']['securityContext']['runAsUser'] = 1001; yaml.safe_dump(d, open('web-pod.yaml', 'w'))\" && "
         "kubectl replace --force --grace-period=1 -f web-pod.yaml")
    solve_all_but(h, "web")
    assert h.grade().passed


def test_pod_level_capabilities_are_refused_then_dropped(lab_harness):
    h = lab_harness(LAB)
    solve_all_but(h, "caps")
    refused = h.kubectl("replace", "--force", "-f", "-", check=False,
                        input=pod("ubuntu-sleeper", [("ubuntu-sleeper", None)],
                                  {"capabilities": {"add": ["SYS_TIME", "NET_ADMIN"]}}, 4800))
    assert 'unknown field "spec.securityContext.capabilities"' in refused.stderr
    cap_pod(h, None, "--validate=false", pod_sc={"capabilities": {"add": ["SYS_TIME", "NET_ADMIN"]}})
    assert h.kube.get("v1", "Pod", "ubuntu-sleeper", "default")["spec"].get("securityContext") in (None, {})
    r = h.grade()
    assert failed_ids(r) == {"test_capabilities"}
    assert check_of(r, "test_capabilities").message == (
        "Pod 'ubuntu-sleeper': container 'ubuntu-sleeper' adds no capabilities. The pod-level securityContext has "
        "no capabilities field: kubectl refuses it as an unknown field, and with --validate=false the API server "
        "silently drops it. Look: kubectl explain pod.spec.containers.securityContext.capabilities\n"
        + RECREATE.format("ubuntu-sleeper"))


def test_cap_prefixed_names_fail(lab_harness):
    h = lab_harness(LAB)
    r = caps_graded(h, {"capabilities": {"add": ["CAP_SYS_TIME", "CAP_NET_ADMIN"]}})
    assert check_of(r, "test_capabilities").message == (
        "Pod 'ubuntu-sleeper': container 'ubuntu-sleeper' adds ['CAP_SYS_TIME', 'CAP_NET_ADMIN']: containerd puts "
        "CAP_ in front of every name itself, so it would look for CAP_CAP_SYS_TIME, which does not exist, and the "
        "container would silently not get it.\n" + RECREATE.format("ubuntu-sleeper"))


def test_one_capability_missing_or_dropped_again_fails(lab_harness):
    h = lab_harness(LAB)
    solve_all_but(h, "caps")
    cap_pod(h, {"capabilities": {"add": ["SYS_TIME"]}})
    assert check_of(h.grade(), "test_capabilities").message == (
        "Pod 'ubuntu-sleeper': container 'ubuntu-sleeper' adds ['SYS_TIME']; missing: NET_ADMIN.\n"
        + RECREATE.format("ubuntu-sleeper"))
    cap_pod(h, {"capabilities": {"add": ["SYS_TIME", "NET_ADMIN"], "drop": ["NET_ADMIN"]}})
    assert check_of(h.grade(), "test_capabilities").message == (
        "Pod 'ubuntu-sleeper': container 'ubuntu-sleeper' adds ['SYS_TIME', 'NET_ADMIN'] but also drops "
        "['NET_ADMIN']: individual drops apply after the adds (only drop: [ALL] is applied first).\n"
        + RECREATE.format("ubuntu-sleeper"))


def test_capabilities_as_a_string_lose_the_pod(lab_harness):
    """`add: SYS_TIME` (not a list) is refused, and replace --force has already deleted the old
    pod by then: the grader must report the missing pod, not crash or blame the capabilities."""
    h = lab_harness(LAB)
    refused = h.kubectl("replace", "--force", "--grace-period=1", "-f", "-", check=False,
                        input=pod("ubuntu-sleeper", [("ubuntu-sleeper", {"capabilities": {"add": "SYS_TIME"}})],
                                  seconds=4800))
    assert "cannot unmarshal string" in refused.stderr
    r = h.grade()
    assert check_of(r, "test_cap_pod_exists").message == (
        "Pod 'ubuntu-sleeper' not found in namespace 'default' (kubectl get pods -n default); the lab created it, "
        "and ckalab reset security-contexts sets it up again.")
    assert check_of(r, "test_capabilities").message == 'Not checked yet: first fix "capabilities pod exists".'


def test_sidecar_overridden_fails(lab_harness):
    h = lab_harness(LAB)
    solve_all_but(h, "multi")
    multi_pod(h, sidecar_sc={"runAsUser": 1002})
    r = h.grade()
    assert failed_ids(r) == {"test_multi_sidecar_user"}
    assert check_of(r, "test_multi_sidecar_user").message == (
        "Pod 'multi-pod': container 'sidecar' sets its own runAsUser 1002, which overrides the pod's; expected it "
        "to keep the pod-level user 1001. " + RECREATE.format("multi-pod"))


def test_web_container_left_at_pod_user_fails(lab_harness):
    h = lab_harness(LAB)
    solve_all_but(h, "multi")
    multi_pod(h, web_sc=None)
    r = h.grade()
    assert failed_ids(r) == {"test_multi_web_user"}
    assert check_of(r, "test_multi_web_user").message == (
        "Pod 'multi-pod': container 'web' inherits user 1001 from the pod; expected 1002 for this container alone, "
        "while the pod's user stays 1001. " + RECREATE.format("multi-pod"))


def test_users_only_at_container_level_fail_the_pod_level_check(lab_harness):
    """Effective users right, but the task asks for the pod-level setting the sidecar inherits."""
    h = lab_harness(LAB)
    solve_all_but(h, "multi")
    multi_pod(h, pod_sc=None, sidecar_sc={"runAsUser": 1001})
    r = h.grade()
    assert failed_ids(r) == {"test_multi_pod_user"}
    assert check_of(r, "test_multi_pod_user").message == (
        "Pod 'multi-pod': the pod-level securityContext (spec.securityContext) has runAsUser None; expected 1001, "
        "which every container inherits unless it sets its own. " + RECREATE.format("multi-pod"))


def test_wrong_container_names_and_wrong_web_user_fail(lab_harness):
    h = lab_harness(LAB)
    solve_all_but(h, "multi")
    web_pod(h, pod_sc={"runAsUser": 1001}, container_sc={"runAsUser": 1000})
    multi_pod(h, names=("web", "side-car"))
    r = h.grade()
    assert failed_ids(r) == {"test_web_pod_user", "test_multi_pod_exists", "test_multi_pod_user",
                             "test_multi_web_user", "test_multi_sidecar_user"}
    assert check_of(r, "test_web_pod_user").message == (
        "Pod 'web-pod': container 'web-pod' runs as user 1000 (from its own securityContext); expected 1001.\n"
        + RECREATE.format("web-pod"))
    assert check_of(r, "test_multi_pod_exists").message == (
        "Pod 'multi-pod' has containers ['web', 'side-car']; missing ['sidecar']. " + RECREATE.format("multi-pod"))


def test_pods_cannot_be_patched_in_place(lab_harness):
    """Why the hints say recreate: the API server forbids the change."""
    h = lab_harness(LAB)
    bad = h.kubectl("patch", "pod", "web-pod", "-p", '{"spec":{"securityContext":{"runAsUser":1001}}}', check=False)
    assert bad.returncode != 0 and "Forbidden: pod updates may not change fields" in bad.stderr
    assert "test_web_pod_user" in failed_ids(h.grade())


def test_start_twice_equals_once(lab_harness):
    h = lab_harness(LAB)

    def state():
        pods = h.kube.list("v1", "Pod", "default", f"ckalab.io/lab={LAB}")
        return sorted((p["metadata"]["name"], p["metadata"]["uid"]) for p in pods)

    before = state()
    assert [n for n, _ in before] == ["ubuntu-sleeper", "web-pod"]
    h.start()
    assert state() == before


def test_start_keeps_the_learners_pods(lab_harness):
    """Setup only creates what is missing: a second start must not undo (or fail on) the work."""
    h = lab_harness(LAB)
    h.solve()
    h.start()
    assert h.grade().passed


def test_privileged_with_the_capabilities_fails(lab_harness):
    """privileged: true grants every capability: the two asked for are there, and far more."""
    h = lab_harness(LAB)
    r = caps_graded(h, {"privileged": True, "capabilities": {"add": ["SYS_TIME", "NET_ADMIN"]}},
                    fails=["test_no_extra_privileges"])
    assert check_of(r, "test_no_extra_privileges").message == (
        "Pod 'ubuntu-sleeper': container 'ubuntu-sleeper' is privileged: true, which gives it every capability and "
        "the node's devices. The task asks for SYS_TIME and NET_ADMIN only. " + RECREATE.format("ubuntu-sleeper"))
    r = caps_graded(h, {"privileged": True}, fails=["test_capabilities", "test_no_extra_privileges"])
    assert check_of(r, "test_capabilities").message.startswith(
        "Pod 'ubuntu-sleeper': container 'ubuntu-sleeper' adds no capabilities (privileged: true does grant them, "
        "but together with every other capability).")


def test_all_other_capabilities_and_host_namespaces_fail(lab_harness):
    """add: [ALL] and extra capabilities over-grant; a runtime default (CHOWN) is no extra privilege."""
    h = lab_harness(LAB)
    r = caps_graded(h, {"capabilities": {"add": ["ALL"]}}, fails=["test_no_extra_privileges"])  # ALL has the two
    assert check_of(r, "test_no_extra_privileges").message == (
        "Pod 'ubuntu-sleeper': container 'ubuntu-sleeper' adds ALL, which is every capability. The task asks for "
        "SYS_TIME and NET_ADMIN only. " + RECREATE.format("ubuntu-sleeper"))
    manifest = json.loads(pod("ubuntu-sleeper", [("ubuntu-sleeper", {"capabilities": {
        "add": ["SYS_TIME", "NET_ADMIN", "CHOWN", "sys_admin", "BPF"]}})], seconds=4800))
    manifest["spec"]["hostNetwork"] = True
    replace(h, json.dumps(manifest))
    assert check_of(h.grade(), "test_no_extra_privileges").message == (
        "Pod 'ubuntu-sleeper': the pod shares the node's namespaces (hostNetwork: true); container 'ubuntu-sleeper' "
        "also adds ['BPF', 'SYS_ADMIN']. The task asks for SYS_TIME and NET_ADMIN only. "
        + RECREATE.format("ubuntu-sleeper"))


def test_capabilities_for_a_non_root_user_fail(lab_harness):
    """Added capabilities are cleared for a non-root process (no ambient capabilities); and a
    runAsNonRoot container with the root-user ubuntu image never starts."""
    h = lab_harness(LAB)
    caps = {"capabilities": {"add": ["SYS_TIME", "NET_ADMIN"]}}
    r = caps_graded(h, caps, pod_sc={"runAsUser": 1001})
    assert check_of(r, "test_capabilities").message == (
        "Pod 'ubuntu-sleeper': container 'ubuntu-sleeper' runs as user 1001 (from the pod's securityContext): "
        "capabilities added to a non-root process are cleared when it starts (Kubernetes gives it no ambient "
        "capabilities), so it would run without SYS_TIME and NET_ADMIN.\n" + RECREATE.format("ubuntu-sleeper"))
    cap_pod(h, {**caps, "runAsNonRoot": True})
    assert check_of(h.grade(), "test_capabilities").message.startswith(
        "Pod 'ubuntu-sleeper': container 'ubuntu-sleeper' has runAsNonRoot: true with no runAsUser, and the ubuntu "
        "image's user is root, so the kubelet would refuse to start it (CreateContainerConfigError).")
    cap_pod(h, {**caps, "runAsUser": 0}, pod_sc={"runAsUser": 1001})  # root again, explicitly: passes
    assert h.grade().passed
