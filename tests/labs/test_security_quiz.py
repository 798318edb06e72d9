"""security-quiz grader: one check per question, live questions graded against the cluster,
generous normalising of correct answers, exact feedback for wrong ones, and broken answer files."""

import importlib.util
import ipaddress
import re
import sys
from pathlib import Path

import pytest
import yaml

from ckalab import labs, pki
from ckalab.grading import CheckFailed
from conftest import check_of, failed_ids

LAB = "security-quiz"
QUESTIONS = yaml.safe_load(labs.load(LAB).data_file("questions").read_text())
IDS = [q["id"] for q in QUESTIONS]
CHECKS = {q["id"]: "test_" + q["id"].replace("-", "_") for q in QUESTIONS}
NOT_CHECKED = 'Not checked yet: first fix "the answers file can be read".'
CHOICE_QS = [q for q in QUESTIONS if q.get("choices")]
SEED = "student-0"  # any seed gives a shuffled variant (asserted where it is used)


def grader_module():
    """The grader as a module, to grade single answers in process (no cluster needed)."""
    spec = importlib.util.spec_from_file_location("security_quiz_grader_under_test", labs.load(LAB).grader)
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses need it
    spec.loader.exec_module(module)
    return module


def right_texts(q: dict) -> list[str]:
    """The right choices of a question, by text, as questions.yaml writes them."""
    letters = [q["answer"]] if q["type"] == "choice" else q["answer"]
    return [q["choices"]["abcdefghijklmnopqrstuvwxyz".index(x)] for x in letters]


def sheet_choices(h) -> dict[str, list[str]]:
    """question id -> its choices in the order questions.md shows them, read from the sheet
    (independently of the grader), with the letters checked to run a, b, c, ..."""
    out, qid = {}, None
    for line in (h.workdir / "questions.md").read_text().splitlines():
        if m := re.search(r"answer key `([a-z0-9-]+)`\)$", line):
            qid = m[1]
        elif m := re.fullmatch(r"- ([a-z])\) (.*)", line):
            assert m[1] == chr(ord("a") + len(out.setdefault(qid, []))), line
            out[qid].append(m[2])
    return out


def template_choices(h) -> dict[str, list[str]]:
    """question id -> its choices in the order the answers template's comments show them."""
    out, pending = {}, []
    for line in (h.workdir / "answers.yaml").read_text().splitlines():
        if m := re.fullmatch(r"# +([a-z])\) (.*)", line):
            assert m[1] == chr(ord("a") + len(pending)), line
            pending.append(m[2])
        elif m := re.fullmatch(r"([a-z0-9-]+):", line):
            if pending:
                out[m[1]], pending = pending, []
    return out


def sheet_letters(sheet: dict, q: dict) -> list[str]:
    """The letters under which a sheet shows a question's right choices."""
    return sorted(chr(ord("a") + sheet[q["id"]].index(t)) for t in right_texts(q))


def live_facts(h) -> dict:
    """This cluster's facts, read independently of the grader (flags and the certificate)."""
    flags = h.cluster.component_flags("kube-apiserver")
    cert = pki.load_cert(h.cluster.read_file(flags["tls-cert-file"]))
    return {"modes": flags["authorization-mode"], "cidr": flags["service-cluster-ip-range"],
            "plugins": flags["enable-admission-plugins"], "issuer": pki.describe(cert).issuer_cn,
            "cert": flags["tls-cert-file"],
            "manifest": f"{Path(h.cluster.pki_dir).parent}/manifests/kube-apiserver.yaml"}


def solved_answers(h) -> dict:
    """The reference answers as a dict, to change one or two of them per test."""
    h.solve()
    return yaml.safe_load((h.workdir / "answers.yaml").read_text())


def write_answers(h, answers: dict, raw: dict | None = None) -> None:
    """Write answers as YAML; `raw` ones go in unquoted, exactly as a learner would type them."""
    answers = {k: v for k, v in answers.items() if k not in (raw or {})}
    h.write("answers.yaml", yaml.safe_dump(answers, sort_keys=False)
            + "".join(f"{k}: {v}\n" for k, v in (raw or {}).items()))


def test_fresh_start_writes_template_and_every_question_is_unanswered(lab_harness):
    h = lab_harness(LAB)
    template = yaml.safe_load((h.workdir / "answers.yaml").read_text())
    assert template == {i: None for i in IDS} and list(template) == IDS
    assert all(f"`{i}`" in (h.workdir / "questions.md").read_text() for i in IDS)
    canonical = {q["id"]: q["choices"] for q in CHOICE_QS}  # no seed: the order of questions.yaml
    assert h.params["shuffle"] == 0 and sheet_choices(h) == canonical and template_choices(h) == canonical
    r = h.grade()
    assert not r.passed and r.score == 1 and r.max_score == 32 and len(r.checks) == 1 + len(QUESTIONS)
    assert failed_ids(r) == set(CHECKS.values())
    assert check_of(r, "test_authorizer_chain").title == "Q1: what the authorizer chain does with a request nobody allows"
    assert check_of(r, "test_authorizer_chain").message == (
        "Question 1 (authorizer-chain) is not answered: write your answer after 'authorizer-chain:' in answers.yaml.")
    assert check_of(r, "test_admission_plugins").message == (
        "Question 15 (admission-plugins) is not answered: write your answer after 'admission-plugins:' in answers.yaml.")
    assert all(" is not answered: " in c.message for c in r.checks if not c.passed)


def test_reference_solution_passes(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    r = h.grade()
    assert r.passed, r.render()
    assert r.score == r.max_score == 32


def test_other_spellings_of_the_right_answers_pass(lab_harness):
    h = lab_harness(LAB)
    f = live_facts(h)
    h.write("answers.yaml", f"""
authorizer-chain: "C) No authorizer allowed it, so the API server answers 403 Forbidden"
default-authorization-mode: always allow
cluster-authorization-modes: [{', '.join(m.lower() for m in f['modes'].split(','))}]
default-kubeconfig: /root/.kube/config
cluster-scoped-resources: F, e, d, C, a
kubelet-client-certificate: (c)
user-csr-fields: "signerName: kubernetes.io/kube-apiserver-client, usages: [client auth]"
image-name: "  docker.io/library/nginx:latest "
basic-auth-removed: v1.19
switch-context: "$ k  config use-context prod"
clusterrole-in-one-namespace: a roleBinding in the namespace dev whose roleRef is the clusterRole view
netpol-pod-selector: B.
service-cidr: "  {f['cidr']}"
apiserver-cert-issuer: CN = {f['issuer'].upper()}
admission-plugins: {', '.join(reversed(f['plugins'].lower().split(',')))}
""")
    r = h.grade()
    assert r.passed, r.render()


def test_pasted_manifest_lines_and_openssl_output_pass(lab_harness):
    """What grep and openssl print, pasted as the answer: the value in it counts."""
    h = lab_harness(LAB)
    f = live_facts(h)
    write_answers(h, solved_answers(h) | {
        "cluster-authorization-modes": f"    - --authorization-mode={f['modes']}",
        "service-cidr": f"--service-cluster-ip-range={f['cidr']}",
        "apiserver-cert-issuer": f"issuer=CN = {f['issuer']}",
        "admission-plugins": f"- --enable-admission-plugins={f['plugins']}",
        "default-authorization-mode": "--authorization-mode=AlwaysAllow",
        "basic-auth-removed": "Kubernetes 1.19"})
    r = h.grade()
    assert r.passed, r.render()


def test_multi_choice_as_yaml_list_and_as_spaced_letters_pass(lab_harness):
    h = lab_harness(LAB)
    answers = solved_answers(h)
    for form in (["e", "a", "d", "f", "c"], "a c d e f", ["PersistentVolume", "storageclass", "Node", "e", "f"]):
        write_answers(h, answers | {"cluster-scoped-resources": form})
        assert h.grade().passed, form


def test_wrong_answers_fail_with_a_diagnosis_not_the_answer(lab_harness):
    h = lab_harness(LAB)
    answers = solved_answers(h)
    write_answers(h, answers | {"default-authorization-mode": "Node", "netpol-pod-selector": "a",
                                "cluster-scoped-resources": ["a", "b", "c", "d", "e", "f"],
                                "image-name": "docker.io/nginx/nginx",
                                "switch-context": "kubectl config set-context prod"},
                  raw={"basic-auth-removed": "1.20"})
    r = h.grade()
    assert failed_ids(r) == {"test_default_authorization_mode", "test_netpol_pod_selector",
                             "test_cluster_scoped_resources", "test_image_name", "test_basic_auth_removed",
                             "test_switch_context"}
    assert r.score == 32 - 13
    assert check_of(r, "test_default_authorization_mode").message == (
        "Question 2 (default-authorization-mode): 'Node' is not correct. That is what kubeadm and kind put on "
        "the command line; the question is what the binary does when the flag is missing.")
    assert check_of(r, "test_netpol_pod_selector").message == (
        "Question 12 (netpol-pod-selector): 'a' is not correct. A podSelector on its own does not look beyond "
        "one namespace.")
    assert check_of(r, "test_cluster_scoped_resources").message == (
        "Question 5 (cluster-scoped-resources): 'a, b, c, d, e, f' is not correct. b) PersistentVolumeClaim: "
        "namespaced; a claim belongs to the namespace of the pods that mount it.")
    assert check_of(r, "test_image_name").message == (
        "Question 8 (image-name): 'docker.io/nginx/nginx' is not correct. Official images are not kept in a "
        "namespace named after the image.")
    # 1.20 stays "1.20": the answers file is read without YAML's number conversion
    assert check_of(r, "test_basic_auth_removed").message == "Question 9 (basic-auth-removed): '1.20' is not correct."
    assert check_of(r, "test_switch_context").message == (
        "Question 10 (switch-context): 'kubectl config set-context prod' is not correct. set-context creates or "
        "edits a context; the current context stays what it was (unless --current, which edits that one).")
    # Diagnose, do not solve: no message gives the right answer away.
    told = " ".join(c.message for c in r.checks)
    for right in ("AlwaysAllow", "library", "1.19", "use-context", "use prod", "prod only", "StorageClass"):
        assert right not in told, right


def test_no_wrong_answer_is_told_the_right_one():
    """Every wrong choice and every listed wrong short answer of every question, graded in process
    (live questions are left to the tests above): no message contains a right choice or an
    accepted answer, and each says more than 'not correct' (a reason)."""
    g = grader_module()
    cluster = type("FakeCluster", (), {"pki_dir": "/etc/kubernetes/pki"})()  # only its paths are read
    seen = 0
    for n, q in enumerate(g.QUESTIONS, 1):
        if q.get("choices"):
            right = set(q["answer"]) if q["type"] == "multi" else {q["answer"]}
            rights = [q["choices"][g.LETTERS.index(x)].rstrip(".") for x in right]
            tries = [x for x in g.LETTERS[:len(q["choices"])] if x not in right]
        elif "accept" in q:
            rights = q["accept"]
            tries = [a for w in q.get("wrong") or [] for a in w["answers"]]
        else:
            continue
        for wrong in tries:
            with pytest.raises(CheckFailed) as exc:
                g.grade(n, q, g.Answers(Path("answers.yaml"), {q["id"]: wrong}), cluster, {})
            reason = str(exc.value).split(" is not correct. ", 1)[1]  # after the learner's own answer
            named = [x for x in rights if re.search(rf"(?<![\w-]){re.escape(x)}(?![\w-])", reason)]
            assert reason and not named, str(exc.value)
            seen += 1
    assert seen > 40


def test_strict_where_the_meaning_differs(lab_harness):
    """Case inside a path or a command, and the order of authorizers, change the meaning."""
    h = lab_harness(LAB)
    answers = solved_answers(h)
    f = live_facts(h)
    write_answers(h, answers | {"default-kubeconfig": "$HOME/.Kube/config",
                                "switch-context": "kubectl config use-context PROD",
                                "cluster-authorization-modes": ",".join(reversed(f["modes"].split(",")))})
    r = h.grade()
    assert failed_ids(r) == {"test_default_kubeconfig", "test_switch_context", "test_cluster_authorization_modes"}
    assert check_of(r, "test_cluster_authorization_modes").message == (
        f"Question 3 (cluster-authorization-modes): '{','.join(reversed(f['modes'].split(',')))}' is not correct. "
        "These are the right ones, but not in the order the API server asks them. "
        f"Look: grep authorization-mode {f['manifest']}")
    assert check_of(r, "test_switch_context").message == (
        "Question 10 (switch-context): 'kubectl config use-context PROD' is not correct. The subcommand is right, "
        "the rest is not: it takes the context's name exactly as the kubeconfig spells it (names are "
        "case-sensitive) and no other flag than --kubeconfig.")
    assert check_of(r, "test_default_kubeconfig").message == (
        "Question 4 (default-kubeconfig): '$HOME/.Kube/config' is not correct.")


def test_live_questions_with_a_wrong_fact_fail(lab_harness):
    h = lab_harness(LAB)
    answers = solved_answers(h)
    f = live_facts(h)
    assert f["cidr"] != "10.0.0.0/24" and "PodSecurity" not in f["plugins"]
    write_answers(h, answers | {"service-cidr": "10.0.0.0/24", "apiserver-cert-issuer": "KUBERNETES-CA",
                                "admission-plugins": f"{f['plugins']},PodSecurity"})
    r = h.grade()
    assert failed_ids(r) == {"test_service_cidr", "test_apiserver_cert_issuer", "test_admission_plugins"}
    assert check_of(r, "test_service_cidr").message == (
        "Question 13 (service-cidr): '10.0.0.0/24' is not correct. That is kube-apiserver's built-in default, "
        "but this cluster's API server sets its own range. "
        f"Look: grep service-cluster-ip-range {f['manifest']}")
    assert check_of(r, "test_apiserver_cert_issuer").message == (
        f"Question 14 (apiserver-cert-issuer): 'KUBERNETES-CA' is not correct. "
        f"Look: openssl x509 -in {f['cert']} -noout -issuer")
    assert check_of(r, "test_admission_plugins").message == (
        f"Question 15 (admission-plugins): '{f['plugins']},PodSecurity' is not correct. PodSecurity is not in "
        f"this cluster's flag. Look: grep enable-admission-plugins {f['manifest']}")


def test_live_questions_diagnose_the_usual_mix_ups(lab_harness):
    """A right range with another prefix, the certificate's own subject instead of its issuer,
    'none' for a cluster that enables plugins, and a mode too many: each said, none answered."""
    h = lab_harness(LAB)
    answers = solved_answers(h)
    f = live_facts(h)
    net = ipaddress.ip_network(f["cidr"])
    subject = pki.describe(pki.load_cert(h.cluster.read_file(f["cert"]))).subject_cn
    write_answers(h, answers | {"service-cidr": str(net.supernet()), "apiserver-cert-issuer": subject,
                                "admission-plugins": "none", "cluster-authorization-modes": f"{f['modes']},ABAC"})
    r = h.grade()
    assert failed_ids(r) == {"test_service_cidr", "test_apiserver_cert_issuer", "test_admission_plugins",
                             "test_cluster_authorization_modes"}
    assert check_of(r, "test_service_cidr").message == (
        f"Question 13 (service-cidr): '{net.supernet()}' is not correct. That overlaps this cluster's range but "
        "is not the same range (check the prefix length). "
        f"Look: grep service-cluster-ip-range {f['manifest']}")
    assert check_of(r, "test_apiserver_cert_issuer").message == (
        f"Question 14 (apiserver-cert-issuer): '{subject}' is not correct. That is the certificate's own subject "
        f"(who it identifies), not who signed it. Look: openssl x509 -in {f['cert']} -noout -issuer")
    assert check_of(r, "test_admission_plugins").message == (
        "Question 15 (admission-plugins): 'none' is not correct. This cluster does enable some explicitly. "
        f"Look: grep enable-admission-plugins {f['manifest']}")
    assert check_of(r, "test_cluster_authorization_modes").message == (
        f"Question 3 (cluster-authorization-modes): '{f['modes']},ABAC' is not correct. ABAC is not in this "
        f"cluster's flag. Look: grep authorization-mode {f['manifest']}")
    told = " ".join(c.message for c in r.checks)
    assert f"={f['cidr']}" not in told and f"CN={f['issuer']}" not in told and f"'{f['issuer']}'" not in told


@pytest.mark.parametrize("kubeconfig, switch", [
    ("/root/.kube/config", "k config use-context prod"),
    ("${HOME}/.kube/config", "kubectl --kubeconfig ~/.kube/config config use-context prod"),
    ("~/.kube//config", "kubectl config use-context prod --kubeconfig=/root/.kube/config"),
    ("/home/candidate/.kube/config", "`kubectl config set current-context prod`"),
    ("$HOME/.kube/config", "KUBECONFIG=/root/.kube/config k config use 'prod'"),
], ids=["root-and-k", "braces-and-flag-first", "double-slash-and-flag-last", "home-and-set", "env-and-quotes"])
def test_equivalent_forms_of_the_kubeconfig_answers_pass(lab_harness, kubeconfig, switch):
    h = lab_harness(LAB)
    write_answers(h, solved_answers(h) | {"default-kubeconfig": kubeconfig, "switch-context": switch})
    r = h.grade()
    assert r.passed, r.render()


@pytest.mark.parametrize("qid, answer, diagnosis", [
    ("default-kubeconfig", "/etc/kubernetes/admin.conf", "That is a kubeconfig kubeadm writes on control-plane "
     "nodes; kubectl reads it only when pointed at it with --kubeconfig or KUBECONFIG."),
    ("default-kubeconfig", "$HOME/.kube", "That is a folder; kubectl reads one file in it."),
    ("default-kubeconfig", "~/.kube/config.yaml", "The folder is right, the file name is not (kubectl adds no "
     "extension of its own)."),
    ("default-kubeconfig", "/root/kube/config", ""),
    ("switch-context", "kubectl config view", "That only shows the kubeconfig; it changes nothing."),
    ("switch-context", "k config use-context prod --namespace dev", "The subcommand is right, the rest is not: "
     "it takes the context's name exactly as the kubeconfig spells it (names are case-sensitive) and no other "
     "flag than --kubeconfig."),
    ("switch-context", "kubectl use-context prod", "kubectl has no such command; everything about contexts is "
     "under kubectl config."),
    ("switch-context", "config use-context prod", "That does not read as one kubectl command (start it with "
     "kubectl, or its alias k; close every quote)."),
    ("switch-context", "kubectl config use-context 'prod", "That does not read as one kubectl command (start "
     "it with kubectl, or its alias k; close every quote)."),
], ids=["admin-conf", "folder", "extension", "no-dot", "view", "extra-flag", "no-config", "no-kubectl",
        "unclosed-quote"])
def test_near_misses_of_the_kubeconfig_answers_fail(lab_harness, qid, answer, diagnosis):
    h = lab_harness(LAB)
    write_answers(h, solved_answers(h) | {qid: answer})
    r = h.grade()
    assert failed_ids(r) == {CHECKS[qid]}
    n = IDS.index(qid) + 1
    assert check_of(r, CHECKS[qid]).message == f"Question {n} ({qid}): '{answer}' is not correct. {diagnosis}".rstrip()


def test_answers_of_the_wrong_shape_and_unclear_choices(lab_harness):
    h = lab_harness(LAB)
    answers = solved_answers(h)
    write_answers(h, answers | {"switch-context": {"kubectl config use-context": "prod"},
                                "kubelet-client-certificate": ["b", "c"],
                                "authorizer-chain": "e", "service-cidr": [["10.96.0.0/12"]]},
                  raw={"user-csr-fields": "yes"})
    r = h.grade()
    assert failed_ids(r) == {"test_switch_context", "test_kubelet_client_certificate", "test_user_csr_fields",
                             "test_authorizer_chain", "test_service_cidr"}
    assert check_of(r, "test_switch_context").message == (
        "Question 10 (switch-context): your answer is a mapping (key: value pairs; put quotes around an answer "
        "that contains ': '), but this question wants text.")
    assert check_of(r, "test_kubelet_client_certificate").message == (
        "Question 6 (kubelet-client-certificate): your answer is a list of 2 items, but this question wants "
        "one letter, like: b.")
    assert check_of(r, "test_user_csr_fields").message == (
        "Question 7 (user-csr-fields): 'yes' is not one of the choices: answer with a letter from a to d "
        "(or the text of a choice).")
    assert check_of(r, "test_authorizer_chain").message == (
        "Question 1 (authorizer-chain): 'e' is not one of the choices: answer with a letter from a to d "
        "(or the text of a choice).")
    assert check_of(r, "test_service_cidr").message == (
        "Question 13 (service-cidr): your answer is a list that holds lists or mappings, but this question "
        "wants a comma-separated list.")


def test_misspelled_key_is_pointed_out(lab_harness):
    h = lab_harness(LAB)
    answers = solved_answers(h)
    del answers["netpol-pod-selector"]
    write_answers(h, answers | {"netpol-podselector": "b"})
    r = h.grade()
    assert failed_ids(r) == {"test_netpol_pod_selector"}
    assert check_of(r, "test_netpol_pod_selector").message == (
        "Question 12 (netpol-pod-selector) is not answered: write your answer after 'netpol-pod-selector:' in "
        "answers.yaml. (answers.yaml has the key 'netpol-podselector': did you mean 'netpol-pod-selector'?)")


FORMAT = "one line per question: 'question-id: answer'"


@pytest.mark.parametrize("content, message", [
    ("authorizer-chain: c\n  image-name: [\n",
     "{path} is not valid YAML: mapping values are not allowed here (line 2, column 13). Write " + FORMAT +
     "; put quotes around an answer that contains ': ' or ' #' or starts with one of { [ * & ! | > ' \" % @ `."),
    ("- authorizer-chain: c\n- image-name: nginx\n",
     "{path} holds a list, not a mapping of question ids to answers. Write " + FORMAT + "."),
    ("c, AlwaysAllow, b\n", "{path} holds a single line of text, not a mapping of question ids to answers. "
     "Write " + FORMAT + "."),
    ("", "{path} is empty. Write " + FORMAT + " (run 'ckalab reset security-quiz' after deleting it for a template)."),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "{path} is not UTF-8 text (it holds binary data or another "
     "encoding). Write it as plain YAML, " + FORMAT + "."),
    (b"authorizer-chain: \xe9t\xe9\n", "{path} is not UTF-8 text (it holds binary data or another "
     "encoding). Write it as plain YAML, " + FORMAT + "."),
    (None, "{path} does not exist. Run 'ckalab start security-quiz' to get a template with every question, "
     "then write your answers in it."),
], ids=["not-yaml", "list", "scalar", "empty", "binary", "latin1", "missing"])
def test_broken_answers_file(lab_harness, content, message):
    h = lab_harness(LAB)
    path = h.workdir / "answers.yaml"
    if content is None:
        path.unlink()
    else:
        h.write("answers.yaml", content)
    r = h.grade()
    assert failed_ids(r) == {"test_answers_file", *CHECKS.values()} and r.score == 0
    assert check_of(r, "test_answers_file").message == message.replace("{path}", str(path))
    assert check_of(r, "test_image_name").message == NOT_CHECKED


def test_start_twice_equals_once_and_keeps_the_learners_answers(lab_harness):
    h = lab_harness(LAB)
    template = (h.workdir / "answers.yaml").read_text()
    sheet = (h.workdir / "questions.md").read_text()
    h.start()
    assert (h.workdir / "answers.yaml").read_text() == template
    assert (h.workdir / "questions.md").read_text() == sheet
    h.write("answers.yaml", "authorizer-chain: c\n")
    h.start()
    h.reset()
    assert (h.workdir / "answers.yaml").read_text() == "authorizer-chain: c\n"
    (h.workdir / "answers.yaml").unlink()
    h.start()
    assert (h.workdir / "answers.yaml").read_text() == template


# --- randomised variants: the `shuffle` param orders the choices ------------------------------

def test_seeded_variant_shows_its_own_choice_order(lab_harness):
    h = lab_harness(LAB, SEED)
    assert h.params["shuffle"] != 0
    sheet = sheet_choices(h)
    assert {k: sorted(v) for k, v in sheet.items()} == {q["id"]: sorted(q["choices"]) for q in CHOICE_QS}
    assert any(sheet_letters(sheet, q) != sheet_letters({q["id"]: q["choices"]}, q) for q in CHOICE_QS)
    assert template_choices(h) == sheet  # the template's comments show the same order
    # The same seed gives the same order in another start.
    h.start()
    assert sheet_choices(h) == sheet


def test_seeded_variant_reference_solution_passes(lab_harness):
    h = lab_harness(LAB, SEED)
    h.solve()
    r = h.grade()
    assert r.passed and r.score == r.max_score == 32, r.render()
    answers = yaml.safe_load((h.workdir / "answers.yaml").read_text())
    sheet = sheet_choices(h)
    for q in CHOICE_QS:  # letters, not texts: the key is this variant's own
        given = answers[q["id"]] if q["type"] == "multi" else [answers[q["id"]]]
        assert sorted(given) == sheet_letters(sheet, q), q["id"]


def test_canonical_answers_fail_a_shuffled_variant(lab_harness):
    h = lab_harness(LAB, SEED)
    sheet = sheet_choices(h)
    labs.solve(labs.load(LAB), h.cluster)  # the canonical variant's letters, in this work dir
    r = h.grade()
    canonical = {q["id"]: sheet_letters({q["id"]: q["choices"]}, q) for q in CHOICE_QS}
    moved = [q for q in CHOICE_QS if sheet_letters(sheet, q) != canonical[q["id"]]]
    assert moved and failed_ids(r) == {CHECKS[q["id"]] for q in moved}
    for q in moved:  # the canonical letters pick other texts here: each is diagnosed, none answered
        n = IDS.index(q["id"]) + 1
        picked = canonical[q["id"]]
        why = {t: " ".join(q["wrong"][chr(ord("a") + q["choices"].index(t))].split())
               for t in q["choices"] if t not in right_texts(q)}
        wrong = [x for x in picked if sheet[q["id"]][ord(x) - ord("a")] in why]
        if q["type"] == "choice":
            diagnosis = why[sheet[q["id"]][ord(picked[0]) - ord("a")]]
        else:
            texts = [sheet[q["id"]][ord(x) - ord("a")] for x in wrong]
            missing = len(right_texts(q)) - (len(picked) - len(wrong))
            diagnosis = " ".join([f"{x}) {t.rstrip('.')}: {why[t]}" for x, t in zip(wrong, texts)] +
                                 ([f"{missing} right {'choice is' if missing == 1 else 'choices are'} missing."]
                                  if missing else []))
        assert check_of(r, CHECKS[q["id"]]).message == (
            f"Question {n} ({q['id']}): '{', '.join(picked)}' is not correct. {diagnosis}")


@pytest.mark.parametrize("seed", [None, SEED, "student-7"])
def test_answers_by_choice_text_pass_in_every_variant(lab_harness, seed):
    h = lab_harness(LAB, seed)
    answers = solved_answers(h)
    texts = {q["id"]: right_texts(q) if q["type"] == "multi" else right_texts(q)[0] for q in CHOICE_QS}
    write_answers(h, answers | texts)
    r = h.grade()
    assert r.passed and r.score == 32, r.render()
