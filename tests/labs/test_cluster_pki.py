"""cluster-pki grader: answers are compared with the live cluster's flags and certificates.

Expected answers in these tests are read from the cluster's files at their kubeadm paths, never
written down, so the tests hold for any cluster (each local cluster has its own PKI and dates).
"""

import datetime as dt
import posixpath

import yaml
from conftest import check_of, failed_ids

from ckalab import labs, pki

LAB = "cluster-pki"
QUESTIONS = {"test_kubelet_client_cert", "test_kubelet_client_key", "test_etcd_client_cert", "test_apiserver_sans",
             "test_etcd_server_issuer", "test_apiserver_expiry", "test_ca_cn", "test_etcd_client_ca"}


def info(h, rel: str) -> pki.CertInfo:
    return pki.describe(pki.load_cert(h.cluster.read_file(rel)))


def good_answers(h) -> dict:
    """Correct answers in forms other than the reference's: relative paths, bare SANs in another
    order, an ISO date that YAML reads as a date, 'CN = ...' as openssl prints it."""
    api = info(h, "apiserver.crt")
    return {
        "apiserver_kubelet_client_cert": "apiserver-kubelet-client.crt",
        "apiserver_kubelet_client_key": "pki/apiserver-kubelet-client.key",  # via the work dir's link
        "apiserver_etcd_client_cert": "/etc/kubernetes/pki/apiserver-etcd-client.crt",  # kubeadm's path
        "apiserver_sans": sorted(api.ip_addresses, reverse=True) + sorted(api.dns_names, reverse=True),
        "etcd_server_issuer_cn": f"CN = {info(h, 'etcd/server.crt').issuer_cn}",
        "apiserver_cert_expiry": api.not_after.date(),
        "ca_cn": info(h, "ca.crt").subject_cn,
        "etcd_client_ca_file": f"{h.workdir}/pki/./etcd/ca.crt",
    }


def write_answers(h, answers: dict) -> None:
    h.write(h.params["answers_file"], yaml.safe_dump(answers, sort_keys=False))


def flag_pki(h) -> str:
    """The PKI directory as the control plane's flags name it, which the messages quote: this
    machine's path for processes, /etc/kubernetes/pki (the node's) for static pods on real nodes."""
    return posixpath.dirname(h.cluster.component_flags("kube-apiserver")["client-ca-file"])


def manifests(h) -> str:
    return h.cluster.pki_dir.rsplit("/", 1)[0] + "/manifests"


def test_fresh_start_gives_a_template_and_fails_every_question(lab_harness):
    h = lab_harness(LAB)
    template = yaml.safe_load((h.workdir / "answers.yaml").read_text())
    assert set(template) == {"apiserver_kubelet_client_cert", "apiserver_kubelet_client_key",
                             "apiserver_etcd_client_cert", "apiserver_sans", "etcd_server_issuer_cn",
                             "apiserver_cert_expiry", "ca_cn", "etcd_client_ca_file"}
    assert (h.workdir / "pki").resolve() == (h.cluster.dir / "etc/kubernetes/pki").resolve()
    assert (h.workdir / "manifests" / "kube-apiserver.yaml").is_file()
    r = h.grade()
    assert failed_ids(r) == QUESTIONS and r.score == 1
    assert check_of(r, "test_kubelet_client_cert").message == (
        "apiserver_kubelet_client_cert is not answered yet. Find it: "
        f"grep -- --kubelet-client-certificate {manifests(h)}/kube-apiserver.yaml")
    assert check_of(r, "test_apiserver_expiry").message == (
        "apiserver_cert_expiry is not answered yet. Find it: "
        f"openssl x509 -in {flag_pki(h)}/apiserver.crt -noout -enddate")


def test_reference_solution_passes(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    r = h.grade()
    assert r.passed, r.render()
    assert r.score == r.max_score == 16


def test_seeded_variant_uses_its_answers_file(lab_harness):
    h = lab_harness(LAB, seed="s3")
    assert h.params["answers_file"] != "answers.yaml"
    assert (h.workdir / h.params["answers_file"]).is_file()
    h.solve()
    assert h.grade().passed


def test_other_correct_forms_pass(lab_harness):
    h = lab_harness(LAB)
    write_answers(h, good_answers(h))
    r = h.grade()
    assert r.passed, r.render()


def test_openssl_style_text_answers_pass(lab_harness):
    h = lab_harness(LAB)
    api = info(h, "apiserver.crt")
    answers = good_answers(h)
    answers["apiserver_sans"] = ", ".join(sorted(api.sans)).replace("IP:", "IP Address:")  # one pasted line
    answers["apiserver_cert_expiry"] = f"notAfter={api.not_after:%b %e %H:%M:%S %Y} GMT"
    answers["ca_cn"] = f"subject=CN={info(h, 'ca.crt').subject_cn}"
    answers["apiserver_kubelet_client_cert"] = (  # the manifest's line, as grep prints it
        f"- --kubelet-client-certificate={h.cluster.pki_dir}/apiserver-kubelet-client.crt")
    write_answers(h, answers)
    r = h.grade()
    assert r.passed, r.render()


def test_ca_given_as_kubelet_client_cert_fails_with_a_diagnosis(lab_harness):
    h = lab_harness(LAB)
    write_answers(h, {**good_answers(h), "apiserver_kubelet_client_cert": "ca.crt"})
    r = h.grade()
    assert failed_ids(r) == {"test_kubelet_client_cert"}
    assert check_of(r, "test_kubelet_client_cert").message == (
        "apiserver_kubelet_client_cert: 'ca.crt' is not the client certificate kube-apiserver presents to kubelets. "
        "That file is what kube-apiserver --client-ca-file names. ca.crt is a CA certificate: it verifies other "
        "certificates, it does not identify kube-apiserver. "
        f"Look: grep -- --kubelet-client-certificate {manifests(h)}/kube-apiserver.yaml")


def test_mixed_up_files_are_named_for_what_they_are(lab_harness):
    """A certificate where its key is asked, a key where a certificate is asked, another
    connection's certificate: each message says what the given file is, never the right one."""
    h = lab_harness(LAB)
    write_answers(h, {**good_answers(h), "apiserver_kubelet_client_key": "apiserver-kubelet-client.crt",
                      "apiserver_etcd_client_cert": "pki/apiserver-etcd-client.key",
                      "apiserver_kubelet_client_cert": "/etc/kubernetes/pki/apiserver.crt"})
    r = h.grade()
    assert failed_ids(r) == {"test_kubelet_client_key", "test_etcd_client_cert", "test_kubelet_client_cert"}
    api = f"{manifests(h)}/kube-apiserver.yaml"
    assert check_of(r, "test_kubelet_client_key").message == (
        "apiserver_kubelet_client_key: 'apiserver-kubelet-client.crt' is not the key of kube-apiserver's client "
        "certificate for kubelets. That file is what kube-apiserver --kubelet-client-certificate names. The "
        f"question asks for a private key, not a certificate. Look: grep -- --kubelet-client-key {api}")
    assert check_of(r, "test_etcd_client_cert").message == (
        "apiserver_etcd_client_cert: 'pki/apiserver-etcd-client.key' is not the client certificate kube-apiserver "
        "presents to etcd. That file is what kube-apiserver --etcd-keyfile names. That is a private key; the "
        f"question asks for a certificate. Look: grep -- --etcd-certfile {api}")
    assert check_of(r, "test_kubelet_client_cert").message == (
        "apiserver_kubelet_client_cert: '/etc/kubernetes/pki/apiserver.crt' is not the client certificate "
        "kube-apiserver presents to kubelets. That file is what kube-apiserver --tls-cert-file names. "
        f"Look: grep -- --kubelet-client-certificate {api}")


def test_cluster_ca_given_for_etcd_fails(lab_harness):
    h = lab_harness(LAB)
    cluster_ca = info(h, "ca.crt").subject_cn
    etcd_ca = info(h, "etcd/ca.crt").subject_cn
    write_answers(h, {**good_answers(h), "etcd_server_issuer_cn": cluster_ca, "etcd_client_ca_file": "ca.crt"})
    r = h.grade()
    assert failed_ids(r) == {"test_etcd_server_issuer", "test_etcd_client_ca"}
    assert check_of(r, "test_etcd_server_issuer").message == (
        f"etcd_server_issuer_cn: '{cluster_ca}' is not the issuer of etcd's serving certificate "
        f"(--cert-file={flag_pki(h)}/etcd/server.crt). '{cluster_ca}' is the cluster CA, which kube-apiserver "
        f"trusts for clients; etcd has a CA of its own. "
        f"Look: openssl x509 -in {flag_pki(h)}/etcd/server.crt -noout -issuer")
    assert check_of(r, "test_etcd_client_ca").message == (
        "etcd_client_ca_file: 'ca.crt' is not the CA file etcd verifies its clients' certificates against. "
        "That file is what kube-apiserver --client-ca-file names. "
        f"Look: grep -- --trusted-ca-file {manifests(h)}/etcd.yaml")
    told = " ".join(c.message for c in r.checks)
    assert f"CN={etcd_ca}" not in told and f"'{etcd_ca}'" not in told and "=etcd/ca.crt" not in told


def test_incomplete_sans_and_ca_expiry_fail(lab_harness):
    h = lab_harness(LAB)
    api, ca = info(h, "apiserver.crt"), info(h, "ca.crt")
    sans = sorted(api.sans)
    dropped = sans.pop()  # one SAN left out
    write_answers(h, {**good_answers(h), "apiserver_sans": sans + ["DNS:kubernetes.svc"],
                      "apiserver_cert_expiry": ca.not_after.date().isoformat()})
    r = h.grade()
    assert failed_ids(r) == {"test_apiserver_sans", "test_apiserver_expiry"}
    serving = f"{flag_pki(h)}/apiserver.crt"
    kind = "1 DNS name" if dropped.startswith("DNS:") else "1 IP address"
    assert check_of(r, "test_apiserver_sans").message == (
        f"apiserver_sans: 1 of its SANs is missing ({kind}); not in the certificate: DNS:kubernetes.svc. The "
        f"serving certificate (--tls-cert-file={serving}) has {len(api.sans)} SANs. "
        f"Look: openssl x509 -in {serving} -noout -ext subjectAltName")
    assert dropped not in check_of(r, "test_apiserver_sans").message
    assert check_of(r, "test_apiserver_expiry").message == (
        f"apiserver_cert_expiry: {ca.not_after.date().isoformat()} is not when the API server's serving "
        f"certificate (--tls-cert-file={serving}) expires. That is the CA's expiry; the API server certificate "
        f"expires sooner. Look: openssl x509 -in {serving} -noout -enddate")
    assert api.not_after.date().isoformat() not in check_of(r, "test_apiserver_expiry").message


def test_dates_and_names_mixed_up_are_diagnosed(lab_harness):
    """notBefore for notAfter, a date one day off, the certificate's subject for its issuer,
    another CA's CN for the cluster CA's, SANs with no IP addresses: said, not answered."""
    h = lab_harness(LAB)
    api, etcd_server = info(h, "apiserver.crt"), info(h, "etcd/server.crt")
    ca, etcd_ca, proxy_ca = info(h, "ca.crt"), info(h, "etcd/ca.crt"), info(h, "front-proxy-ca.crt")
    serving, pki_dir = f"{flag_pki(h)}/apiserver.crt", flag_pki(h)
    for expiry, note in ((api.not_before.date(), " That is the date it became valid (notBefore); the question "
                          "asks when it stops being valid."),
                         (api.not_after.date() + dt.timedelta(days=1), " That is one day off: openssl prints the "
                          "time in GMT; give the date in GMT.")):
        write_answers(h, {**good_answers(h), "apiserver_cert_expiry": expiry.isoformat(),
                          "etcd_server_issuer_cn": etcd_server.subject_cn, "ca_cn": proxy_ca.subject_cn,
                          "apiserver_sans": sorted(api.dns_names)})
        r = h.grade()
        assert failed_ids(r) == {"test_apiserver_expiry", "test_etcd_server_issuer", "test_ca_cn",
                                 "test_apiserver_sans"}
        assert check_of(r, "test_apiserver_expiry").message == (
            f"apiserver_cert_expiry: {expiry.isoformat()} is not when the API server's serving certificate "
            f"(--tls-cert-file={serving}) expires.{note} Look: openssl x509 -in {serving} -noout -enddate")
    assert check_of(r, "test_etcd_server_issuer").message == (
        f"etcd_server_issuer_cn: '{etcd_server.subject_cn}' is not the issuer of etcd's serving certificate "
        f"(--cert-file={pki_dir}/etcd/server.crt). That is the certificate's own subject, not who signed it. "
        f"Look: openssl x509 -in {pki_dir}/etcd/server.crt -noout -issuer")
    assert check_of(r, "test_ca_cn").message == (
        f"ca_cn: '{proxy_ca.subject_cn}' is not the CN of the CA kube-apiserver trusts for client certificates "
        f"(--client-ca-file={pki_dir}/ca.crt). That is the CN of front-proxy-ca.crt, a CA for another purpose. "
        f"Look: openssl x509 -in {pki_dir}/ca.crt -noout -subject")
    n = len(api.ip_addresses)
    assert check_of(r, "test_apiserver_sans").message == (
        f"apiserver_sans: {n} of its SANs are missing ({n} IP addresses). The serving certificate "
        f"(--tls-cert-file={serving}) has {len(api.sans)} SANs. "
        f"Look: openssl x509 -in {serving} -noout -ext subjectAltName")
    told = " ".join(c.message for c in r.checks)
    assert all(x not in told for x in (*api.ip_addresses, f"'{ca.subject_cn}'", f"CN={ca.subject_cn}",
                                       f"CN={etcd_ca.subject_cn}", api.not_after.date().isoformat()))


def test_missing_file_fails_every_question_once(lab_harness):
    h = lab_harness(LAB)
    (h.workdir / "answers.yaml").unlink()
    r = h.grade()
    assert failed_ids(r) == QUESTIONS | {"test_answers_file"}
    assert check_of(r, "test_answers_file").message == (
        f"answers.yaml not found in {h.workdir}. 'ckalab start cluster-pki' writes a template to fill in.")
    assert check_of(r, "test_ca_cn").message == 'Not checked yet: first fix "the answers file is a YAML mapping".'


def test_yaml_that_does_not_parse_fails(lab_harness):
    h = lab_harness(LAB)
    h.write("answers.yaml", "ca_cn: kubernetes\napiserver_cert_expiry: Nov 27: 2027\n")
    r = h.grade()
    assert check_of(r, "test_answers_file").message == (
        "answers.yaml is not valid YAML at line 2: mapping values are not allowed here. "
        "Quote values that contain ': ' or start with a special character.")


def test_list_and_binary_garbage_fail(lab_harness):
    h = lab_harness(LAB)
    h.write("answers.yaml", "- apiserver-kubelet-client.crt\n- etcd-ca\n")
    assert check_of(h.grade(), "test_answers_file").message == (
        "answers.yaml holds a list, not a mapping of answers: write one 'key: answer' line per question, "
        "as in the template (e.g. ca_cn: ...).")
    h.write("answers.yaml", bytes(range(256)))
    assert check_of(h.grade(), "test_answers_file").message == (
        "answers.yaml is not a text file. Write it as YAML, one 'key: answer' line per question.")


def test_renamed_key_and_wrong_types_fail(lab_harness):
    h = lab_harness(LAB)
    answers = good_answers(h)
    answers["ca-cn"] = answers.pop("ca_cn")
    answers["apiserver_sans"] = {"dns": "kubernetes"}
    answers["apiserver_cert_expiry"] = "next year"
    write_answers(h, answers)
    r = h.grade()
    assert failed_ids(r) == {"test_ca_cn", "test_apiserver_sans", "test_apiserver_expiry"}
    assert check_of(r, "test_ca_cn").message == (
        "answers.yaml has no key 'ca_cn' (is 'ca-cn' meant to be 'ca_cn'?). Keep the template's keys. "
        f"Find the answer: openssl x509 -in {flag_pki(h)}/ca.crt -noout -subject")
    assert check_of(r, "test_apiserver_sans").message == (
        "apiserver_sans should be a list of names and addresses, not a dict.")
    assert check_of(r, "test_apiserver_expiry").message == (
        "apiserver_cert_expiry: 'next year' is not a date I can read. Write it as 2027-11-27 or as openssl "
        "prints it (Nov 27 09:50:00 2027 GMT).")


def test_start_twice_equals_once_and_never_overwrites_answers(lab_harness):
    h = lab_harness(LAB)
    snapshot = lambda: {p.name: (p.readlink() if p.is_symlink() else p.read_bytes())  # noqa: E731
                        for p in sorted(h.workdir.iterdir())}
    once = snapshot()
    h.start()
    assert snapshot() == once
    write_answers(h, good_answers(h))
    mine = (h.workdir / "answers.yaml").read_bytes()
    labs.start(h.lab, h.cluster)
    assert (h.workdir / "answers.yaml").read_bytes() == mine
    assert h.grade().passed
