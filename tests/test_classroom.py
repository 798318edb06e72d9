"""A classroom on one shared cluster (the test cluster, its admin kubeconfig as the instructor's):
per-student namespaces and credentials, isolation tested with SubjectAccessReviews and real
requests, concurrent grading, and a `down` that removes only what `up` made."""

from __future__ import annotations

import csv

import pytest
from kubernetes.client.rest import ApiException

from ckalab import classroom, grading, labs
from ckalab.errors import CkalabError
from ckalab.kube import Kube

CLASS = "iso"
RBAC = "rbac.authorization.k8s.io/v1"


@pytest.fixture(scope="module")
def room(cluster, tmp_path_factory):
    roster = tmp_path_factory.mktemp("roster") / "roster.csv"
    roster.write_text("# workshop roster\nstudent,name\nalice,Alice A\nbob,Bob B\nCarol Ng,Carol\n")
    state = classroom.up(cluster.kubeconfig, roster, CLASS, ["rbac-role", "rbac-clusterrole", "image-pull-secrets"])
    students = {s["id"]: classroom.Student(**s) for s in state["students"]}
    yield state, students, {sid: Kube(kc) for sid, kc in state["kubeconfigs"].items()}
    classroom.down(CLASS)


def sa(st):
    return f"system:serviceaccount:{st.namespace}:{classroom.SERVICE_ACCOUNT}"


def sa_groups(st):
    return ["system:serviceaccounts", f"system:serviceaccounts:{st.namespace}", "system:authenticated"]


def refused(call) -> int:
    with pytest.raises(ApiException) as e:
        call()
    return e.value.status


def test_roster_parsing(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("id,email\nAna María,a@x\n  b0b ,b@x\n")
    assert [(s.id, s.namespace) for s in classroom.read_roster(p, "ws")] == [
        ("Ana María", "ws-ana-mar-a"), ("b0b", "ws-b0b")]
    p.write_text("alice\nbob\n")  # no header: first column
    assert [s.slug for s in classroom.read_roster(p, "ws")] == ["alice", "bob"]
    p.write_text("student\nAlice\nalice\n!!\n")
    with pytest.raises(CkalabError) as e:
        classroom.read_roster(p, "ws")
    assert str(e.value) == (f"Roster {p}:\n  line 3: 'alice' gives the same namespace as 'Alice'\n"
                            "  line 4: student id '!!' has no letters or digits")


def test_which_labs_qualify(room):
    state, _, _ = room
    assert state["labs"] == ["rbac-role", "image-pull-secrets"]
    assert state["excluded"] == {"rbac-clusterrole": "it needs cluster-scoped objects (ClusterRole), which a "
                                                     "namespace-limited student cannot create"}
    kube = Kube(state["kubeconfig"])
    assert classroom.qualification(labs.load("tls-certificates"), kube) == (
        "its grader reads files in the learner's work directory, which stay on the learner's machine")
    assert classroom.qualification(labs.load("csr-approval"), kube) == (
        "it needs cluster-scoped objects (CertificateSigningRequest), which a namespace-limited student cannot create")


def test_students_get_their_own_namespace_and_identity(room):
    state, students, kubes = room
    assert set(kubes) == {"alice", "bob", "Carol Ng"} and state["failed"] == {}
    carol = students["Carol Ng"]
    assert carol.namespace == "iso-carol-ng"
    me = kubes["Carol Ng"].whoami()
    assert me["username"] == sa(carol)
    ns = Kube(state["kubeconfig"]).get("v1", "Namespace", carol.namespace)
    assert ns["metadata"]["labels"][classroom.CLASS_LABEL] == CLASS
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline"
    # Each student has their own variant (seed = student id), set up in their namespace.
    lab = classroom.student_lab("rbac-role", students["alice"], CLASS)
    variant = labs.load("rbac-role", "alice").params
    assert lab.params["namespace"] == "iso-alice" and lab.params == {
        **variant, "namespace": "iso-alice", "user": f"{variant['user']}-iso-alice"}
    tasks = (classroom.classroom_dir(CLASS) / "students" / "alice" / "tasks.md").read_text()
    assert f"user **{lab.params['user']}**" in tasks and "iso-alice" in tasks


def test_isolation_subject_access_reviews(room, kube):
    """The API server's own answer for each student's identity: everything in their namespace,
    nothing in another's or at cluster scope."""
    _, students, _ = room
    for me in students.values():
        u, g = sa(me), sa_groups(me)
        assert kube.can(u, "create", "pods", me.namespace, groups=g)
        assert kube.can(u, "create", "roles", me.namespace, group="rbac.authorization.k8s.io", groups=g)
        for other in students.values():
            if other is me:
                continue
            for verb, res, grp in (("get", "pods", ""), ("list", "secrets", ""), ("create", "pods", ""),
                                   ("create", "rolebindings", "rbac.authorization.k8s.io"),
                                   ("create", "serviceaccounts/token", "")):
                r, _, sub = res.partition("/")
                assert not kube.can(u, verb, r, other.namespace, group=grp, groups=g, subresource=sub or None), \
                    (me.id, verb, res, other.namespace)
        for verb, res, grp in (("create", "clusterrolebindings", "rbac.authorization.k8s.io"),
                               ("create", "clusterroles", "rbac.authorization.k8s.io"),
                               ("list", "nodes", ""), ("patch", "namespaces", ""), ("list", "secrets", ""),
                               ("create", "certificatesigningrequests/approval", "certificates.k8s.io")):
            r, _, sub = res.partition("/")
            assert not kube.can(u, verb, r, None, group=grp, groups=g, subresource=sub or None), (me.id, verb, res)
        assert not kube.can(u, "bind", "clusterroles", me.namespace, group="rbac.authorization.k8s.io", groups=g,
                            name="cluster-admin")
        assert not kube.can(u, "impersonate", "users", None, groups=g)


def test_isolation_real_requests(room):
    """The same with the students' own kubeconfigs: real requests, refused by the API server."""
    _, students, kubes = room
    alice, bob = students["alice"], students["bob"]
    k = kubes["alice"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"},
           "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
    # Positive control: her own namespace works.
    k.core.create_namespaced_pod(alice.namespace, pod)
    assert refused(lambda: k.core.list_namespaced_pod(bob.namespace)) == 403
    assert refused(lambda: k.core.create_namespaced_pod(bob.namespace, pod)) == 403
    assert refused(lambda: k.core.read_namespaced_secret("x", bob.namespace)) == 403
    assert refused(lambda: k.core.list_node()) == 403
    assert refused(lambda: k.core.patch_namespace(alice.namespace, {"metadata": {"labels": {"x": "y"}}})) == 403
    assert refused(lambda: k.core.create_namespaced_service_account_token(
        "student", bob.namespace, {"spec": {"audiences": []}})) == 403
    crb = {"apiVersion": RBAC, "kind": "ClusterRoleBinding", "metadata": {"name": "iso-escalate"},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
           "subjects": [{"kind": "ServiceAccount", "name": "student", "namespace": alice.namespace}]}
    assert refused(lambda: k.rbac.create_cluster_role_binding(crb)) == 403
    # RBAC escalation prevention: no RoleBinding to cluster-admin, no Role with more than `admin`,
    # even in her own namespace; and nothing at all in Bob's.
    rb = {**crb, "kind": "RoleBinding", "metadata": {"name": "iso-escalate", "namespace": alice.namespace}}
    assert refused(lambda: k.rbac.create_namespaced_role_binding(alice.namespace, rb)) == 403
    big = {"apiVersion": RBAC, "kind": "Role", "metadata": {"name": "everything"},
           "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]}
    assert refused(lambda: k.rbac.create_namespaced_role(alice.namespace, big)) == 403
    admin_in_bob = {**rb, "metadata": {"name": "iso-admin", "namespace": bob.namespace},
                    "roleRef": {**rb["roleRef"], "name": "admin"}}
    assert refused(lambda: k.rbac.create_namespaced_role_binding(bob.namespace, admin_in_bob)) == 403
    # Pod Security (baseline) stops the classic node takeover: a privileged pod.
    priv = {**pod, "metadata": {"name": "root"},
            "spec": {"containers": [{"name": "c", "image": "nginx", "securityContext": {"privileged": True}}]}}
    assert refused(lambda: k.core.create_namespaced_pod(alice.namespace, priv)) == 403
    k.core.delete_namespaced_pod("probe", alice.namespace)


def test_grade_every_student(room, tmp_path):
    """Alice solves her variant of rbac-role with her own credentials (proof the task fits her
    rights); Bob does nothing; Carol binds the wrong user. The gradebook says so."""
    state, students, kubes = room
    for sid in ("alice", "Carol Ng"):
        lab = classroom.student_lab("rbac-role", students[sid], CLASS)
        objs = lab.manifests("solution")
        if sid == "Carol Ng":
            objs[1]["subjects"][0]["name"] = "somebody"
        kubes[sid].apply_all(objs)
    book = classroom.grade(CLASS, tmp_path, workers=4)
    r = {row["student"]: row for row in csv.DictReader(open(tmp_path / "gradebook.csv"))}
    assert list(r["alice"]) == ["student", "rbac-role", "image-pull-secrets", "total", "max", "percent", "labs_passed",
                                "backend", "not_available", "duplicates"]
    assert (r["alice"]["rbac-role"], r["bob"]["rbac-role"], r["Carol Ng"]["rbac-role"]) == ("10", "0", "5")
    carol = book.rows["Carol Ng"]["rbac-role"]
    p = classroom.student_lab("rbac-role", students["Carol Ng"], CLASS).params
    msg = next(c["message"] for c in carol["checks"] if c["id"] == "test_binding")
    assert msg == (f"RoleBinding '{p['binding']}' binds User 'somebody'; expected the User '{p['user']}' "
                   "(kind: User, not Group or ServiceAccount).")
    assert (tmp_path / "gradebook.xml").is_file()


def test_fast_runner_equals_the_engine(room, cluster):
    """The thread-safe runner gives exactly what grading.run gives, check by check."""
    state, students, _ = room
    ext = classroom.ExternalCluster(state["kubeconfig"], CLASS)
    kube = Kube(state["kubeconfig"])
    for st in students.values():
        for lab_id in state["labs"]:
            lab = classroom.student_lab(lab_id, st, CLASS)
            fast, engine = grading.run_direct(lab, ext, kube), grading.run(lab, ext)
            assert [(c.id, c.passed, c.points, c.message, c.hint) for c in fast.checks] == \
                   [(c.id, c.passed, c.points, c.message, c.hint) for c in engine.checks]


def test_up_refuses_a_namespace_it_did_not_create(cluster, kube, tmp_path):
    kube.apply({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other-dave"}})
    roster = tmp_path / "r.csv"
    roster.write_text("student\ndave\n")
    state = classroom.up(cluster.kubeconfig, roster, "other", ["rbac-role"])
    assert state["failed"] == {"dave": "CkalabError: namespace 'other-dave' exists and was not created by this "
                                       "classroom; rename the class (--class) or the student"}
    assert classroom.down("other") == ["other--probe", "ValidatingAdmissionPolicyBinding/ckalab-classroom-other",
                                       "ValidatingAdmissionPolicy/ckalab-classroom-other"]
    assert kube.get("v1", "Namespace", "other-dave")["status"]["phase"] == "Active"


def test_down_removes_only_what_up_made(cluster, kube, tmp_path):
    roster = tmp_path / "r.csv"
    roster.write_text("student\nerin\n")
    kube.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep-me", "namespace": "default"}})
    classroom.up(cluster.kubeconfig, roster, "gone", ["rbac-role"])
    assert sorted(classroom.down("gone")) == ["ValidatingAdmissionPolicy/ckalab-classroom-gone",
                                              "ValidatingAdmissionPolicyBinding/ckalab-classroom-gone",
                                              "gone--probe", "gone-erin"]
    vap = kube.get("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy", "ckalab-classroom-gone")
    assert vap is None or vap["metadata"].get("deletionTimestamp")
    ns = kube.get("v1", "Namespace", "gone-erin")
    assert ns is None or ns["metadata"].get("deletionTimestamp")
    assert kube.get("v1", "ConfigMap", "keep-me", "default") and kube.get("v1", "Namespace", "default")
    assert set(classroom.down("gone")) <= {"gone--probe", "gone-erin"}  # again: still only its own


def _rb(ns, name, subjects, role="view"):
    return {"apiVersion": RBAC, "kind": "RoleBinding", "metadata": {"name": name, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
            "subjects": subjects}


def refusal(call) -> str:
    with pytest.raises(ApiException) as e:
        call()
    assert e.value.status in (403, 422), e.value.body
    return e.value.body


OPENS = [
    ("anonymous-group", {"kind": "Group", "name": "system:unauthenticated", "apiGroup": "rbac.authorization.k8s.io"}),
    ("every-user", {"kind": "Group", "name": "system:authenticated", "apiGroup": "rbac.authorization.k8s.io"}),
    ("anonymous-user", {"kind": "User", "name": "system:anonymous", "apiGroup": "rbac.authorization.k8s.io"}),
    ("other-namespace-sa", {"kind": "ServiceAccount", "name": "default", "namespace": "kube-system"}),
]


@pytest.mark.parametrize("subject", [s for _, s in OPENS], ids=[i for i, _ in OPENS])
def test_students_cannot_open_their_namespace(room, subject):
    """The classroom's ValidatingAdmissionPolicy refuses bindings that reach beyond the student."""
    _, students, kubes = room
    alice = students["alice"]
    body = refusal(lambda: kubes["alice"].rbac.create_namespaced_role_binding(
        alice.namespace, _rb(alice.namespace, "open-up", [subject])))
    assert "a RoleBinding may name only service accounts of your own namespace" in body
    # Changing the student's own binding is refused the same way.
    body = refusal(lambda: kubes["alice"].rbac.patch_namespaced_role_binding(
        classroom.BINDING, alice.namespace, {"subjects": [subject]}))
    assert "a RoleBinding may name only service accounts of your own namespace" in body


def test_students_can_still_do_the_rbac_tasks(room):
    _, students, kubes = room
    ns = students["bob"].namespace
    ok = _rb(ns, "fine", [{"kind": "User", "name": "dev-someone", "apiGroup": "rbac.authorization.k8s.io"},
                          {"kind": "ServiceAccount", "name": "app", "namespace": ns},
                          {"kind": "ServiceAccount", "name": "app2"}])
    kubes["bob"].rbac.create_namespaced_role_binding(ns, ok)
    kubes["bob"].rbac.delete_namespaced_role_binding("fine", ns)


def test_tokens_are_capped_and_legacy_token_secrets_refused(room):
    state, students, kubes = room
    k, ns = kubes["alice"], students["alice"].namespace
    year = {"spec": {"audiences": [], "expirationSeconds": 365 * 24 * 3600}}
    body = refusal(lambda: k.core.create_namespaced_service_account_token("student", ns, year))
    assert "tokens live at most 43200 seconds" in body
    short = k.core.create_namespaced_service_account_token("student", ns, {"spec": {"expirationSeconds": 3600}})
    assert short.status.token
    legacy = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
              "metadata": {"name": "forever", "annotations": {"kubernetes.io/service-account.name": "student"}}}
    body = refusal(lambda: k.core.create_namespaced_secret(ns, legacy))
    assert "legacy service-account token Secrets (which never expire) are refused" in body
    # The instructor (not a student identity) is not limited by the policy.
    admin = Kube(state["kubeconfig"])
    assert admin.core.create_namespaced_service_account_token("student", ns, year).status.token


def test_each_student_namespace_has_a_quota_and_limits(room):
    state, students, kubes = room
    admin = Kube(state["kubeconfig"])
    for st in students.values():
        quota = admin.get("v1", "ResourceQuota", "ckalab-student", st.namespace)
        assert quota["spec"]["hard"]["pods"] == classroom.QUOTA["pods"]
        assert admin.get("v1", "LimitRange", "ckalab-student", st.namespace)
    ns = students["alice"].namespace
    assert refusal(lambda: kubes["alice"].core.delete_namespaced_resource_quota("ckalab-student", ns))
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np"},
           "spec": {"type": "NodePort", "ports": [{"port": 80}]}}
    assert "exceeded quota" in refusal(lambda: kubes["alice"].core.create_namespaced_service(ns, svc))


def test_evidence_timeline_from_the_real_audit_log(room, cluster, capsys, tmp_path):
    """Process evidence from the test cluster's own audit log (the local backend writes one):
    a student's calls with their identity, denied ones marked, a pasted-looking burst, and a
    write in their namespace made with another identity (the admin kubeconfig, through kubectl)."""
    import subprocess
    import sys
    from pathlib import Path

    from ckalab import cli
    from ckalab.waiting import wait_for

    state, students, kubes = room
    alice, bob = students["alice"], students["bob"]
    log = cluster.dir / "logs" / "audit.log"
    k = kubes["alice"]
    for i in range(4):   # four writes within a second: the shape of a pasted manifest
        k.core.create_namespaced_config_map(alice.namespace, {"metadata": {"name": f"ev-paste-{i}"}})
    assert refused(lambda: k.core.read_namespaced_secret("ev-peek", bob.namespace)) == 403
    kubectl = Path(sys.executable).parent / "kubectl"
    subprocess.run([str(kubectl), "--kubeconfig", str(state["kubeconfig"]), "create", "configmap", "ev-admin",
                    "-n", alice.namespace], check=True, capture_output=True)

    def alice_calls():
        return classroom.evidence(CLASS, log, student="alice")["alice"]

    d = wait_for(lambda: (lambda d: d if any(c.name == "ev-admin" for c in d["calls"]) else None)(alice_calls()),
                 15, "the audit log to show the admin's write", interval=0.3)
    calls = d["calls"]
    pasted = [c for c in calls if c.verb == "create" and c.name.startswith("ev-paste-")]
    assert [c.name for c in pasted] == [f"ev-paste-{i}" for i in range(4)]
    assert all(c.own and c.code == 201 and not c.denied and c.namespace == alice.namespace for c in pasted)
    peek = next(c for c in calls if c.name == "ev-peek")
    assert (peek.verb, peek.namespace, peek.code, peek.denied, peek.own) == ("get", bob.namespace, 403, True, True)
    other = next(c for c in calls if c.name == "ev-admin")
    assert (other.own, other.user, other.agent.split("/")[0]) == (False, "kubernetes-admin", "kubectl")
    s = d["summary"]
    assert any(n >= 4 and secs <= classroom.BURST_SECONDS * n for _, n, secs in s["bursts"])
    assert s["other_identity_writes"] >= 1 and s["denied"] >= 1 and s["first"] <= s["last"]
    assert d["setup_writes"] > 0   # classroom up's own writes: counted, not listed
    # Bob's timeline has nothing of Alice's.
    assert not [c for c in classroom.evidence(CLASS, log, student="bob")["bob"]["calls"] if c.name.startswith("ev-")]
    # The CLI: one student, one lab (its kinds of objects only), and the caveat.
    assert cli.main(["classroom", "evidence", "--class", CLASS, "--audit-log", str(log), "--student", "alice"]) == 0
    out = capsys.readouterr().out
    assert "== alice (namespace iso-alice)" in out and f"ev-peek -n {bob.namespace}  403" in out
    assert "DENIED" in out and "[other identity: kubernetes-admin]" in out and "  burst: " in out
    assert out.rstrip().endswith(classroom.EVIDENCE_CAVEAT)
    assert cli.main(["classroom", "evidence", "--class", CLASS, "--audit-log", str(log), "--student", "alice",
                     "--lab", "rbac-role"]) == 0
    out = capsys.readouterr().out
    assert "configmaps" not in out and "ev-paste" not in out
    assert cli.main(["classroom", "evidence", "--class", CLASS, "--audit-log", str(log), "--student", "zed"]) == 2
    assert "No student 'zed' in classroom 'iso' (the roster: alice, bob, Carol Ng)." in capsys.readouterr().err
    assert cli.main(["classroom", "evidence", "--class", CLASS, "--audit-log", str(log) + ".gone"]) == 2
    assert f"Cannot read the audit log {log}.gone: No such file or directory." in capsys.readouterr().err
    # Lines that are not audit events are skipped; a directory reads the log and its rotated files.
    d = tmp_path / "logs"
    d.mkdir()
    (d / "audit-2026-01-01T00-00-00.000.log").write_bytes(b"not json\n{\"kind\": 1}\n\xff\x00\n[]\n")
    (d / "audit.log").write_bytes(log.read_bytes())
    again = classroom.evidence(CLASS, d, student="alice")["alice"]
    assert [c.name for c in again["calls"]][:len(calls)] == [c.name for c in calls]
    assert cli.main(["classroom", "evidence", "--class", CLASS, "--audit-log", str(tmp_path)]) == 2
    assert f"Cannot read the audit log {tmp_path}: no audit*.log in this directory." in capsys.readouterr().err
