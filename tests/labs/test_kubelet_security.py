"""kubelet-security on real nodes: setup really loosens node01's kubelet, the checks make real
requests to its port from the controlplane node, the reference solution and other correct
configurations pass, and wrong ones (including a kubelet that no longer starts) fail with their
pinned message. Skipped unless CKALAB_REAL_NODES=1 (root).

    CKALAB_REAL_NODES=1 CKALAB_TEST_HOME=/tmp/ckt-x CKALAB_TEST_KEEP=1 \\
        .venv/bin/pytest tests/labs/test_kubelet_security.py -x -q

Every test starts from `reset` (which gives node01 ckalab's kubelet configuration back and
loosens it again); the module ends with ckalab's configuration restored and the kubelet running.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess

import pytest
import yaml
from conftest import TEST_CLUSTER, LabHarness, check_of, failed_ids

from ckalab import labs
from ckalab.waiting import wait_for

LAB = "kubelet-security"
CONF = "/var/lib/kubelet/config.yaml"
ALL = {"test_kubelet_running", "test_config_file", "test_anonymous_refused", "test_token_checked",
       "test_apiserver_allowed", "test_read_only_port_closed"}
AFTER_RUNNING = ALL - {"test_kubelet_running", "test_config_file"}
LOOK = f"Look on node01: grep -A8 '^authentication' {CONF}; grep -A3 '^authorization' {CONF}"


@pytest.fixture(scope="module")
def contained(real_nodes):
    yield real_nodes
    # ckalab's kubelet configuration back on node01 and the kubelet running with it.
    labs.contain(labs.load(LAB), real_nodes)


@pytest.fixture
def lab(contained):
    def make(**params) -> LabHarness:
        h = LabHarness(contained, LAB)
        h.lab = h.lab.with_params(**params)
        if h.workdir.exists():
            shutil.rmtree(h.workdir)
        h.reset()
        return h
    return make


def grade(h):
    return labs.check(h.lab, h.cluster)  # as `ckalab check`: a node01 without kubelet is graded too


# --- acting on node01 -------------------------------------------------------------------------

def on_node(h, script: str, check: bool = True) -> subprocess.CompletedProcess:
    """A shell script on node01, through `ckalab ssh` as the learner runs it."""
    return h.sh(f"CKALAB_CLUSTER={TEST_CLUSTER} ckalab ssh node01 -- sh -euc {shlex.quote(script)}", check=check)


def conf_path(h):
    """node01's /var/lib/kubelet/config.yaml as this machine sees it (the node's own directory)."""
    return h.cluster.dir / "nodes/node01/var/lib/kubelet/config.yaml"


def node_ip(h) -> str:
    node = h.kube.get("v1", "Node", "node01")
    return next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")


def healthz_code(h) -> str:
    argv, env = h.cluster.shell("controlplane", ["curl", "-sk", "--max-time", "2", "-o", "/dev/null", "-w",
                                                 "%{http_code}", f"https://{node_ip(h)}:10250/healthz"])
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=20).stdout.strip()


def answered_code(h) -> str:
    """healthz_code once the kubelet answers at all: a kubelet restarted moments ago (by reset
    or contain) reports Ready before a loaded machine lets it answer within curl's 2 s."""
    return wait_for(lambda: (code := healthz_code(h)) not in ("", "000") and code, 60,
                    "node01's kubelet to answer")


def restart(h, comes_back: bool = True) -> None:
    """Restart node01's kubelet and wait until it answers again (or, for a configuration it
    refuses, until it has exited)."""
    on_node(h, "systemctl restart kubelet")
    if comes_back:
        wait_for(lambda: healthz_code(h) not in ("", "000"), 60, "node01's kubelet to answer again")
    else:
        wait_for(lambda: on_node(h, "systemctl is-active kubelet", check=False).returncode != 0, 60,
                 "node01's kubelet to give up on its configuration")


def edit(h, change) -> None:
    """Change node01's kubelet configuration as a mapping (change(doc) edits it in place)."""
    doc = yaml.safe_load(conf_path(h).read_text())
    change(doc)
    write(h, yaml.safe_dump(doc, sort_keys=False))


def write(h, text: str) -> None:
    tmp = conf_path(h).with_name(".config.yaml.test")
    tmp.write_text(text)
    tmp.replace(conf_path(h))


def settings(anonymous=False, webhook=True, mode="Webhook", read_only=0):
    """A change that sets the four settings the task names (the secure values by default)."""
    def change(doc):
        doc["authentication"]["anonymous"] = {"enabled": anonymous}
        doc["authentication"]["webhook"] = {"enabled": webhook}
        doc["authorization"] = {"mode": mode}
        doc["readOnlyPort"] = read_only
    return change


# --- tests ------------------------------------------------------------------------------------

def test_on_kwok_nodes_every_check_is_unavailable(cluster):
    """Runs first, before the module switches to real nodes: kwok's node01 has no kubelet."""
    if cluster.offers("node-shell"):
        pytest.skip("this session's cluster runs on real nodes")
    lab_ = labs.load(LAB)
    assert not labs.runs_on(lab_, cluster)
    r = labs.check(lab_, cluster)
    assert {c.state for c in r.checks} == {"unavailable"} and r.max_score == 0, r.render()
    assert check_of(r, "test_kubelet_running").message == (
        "needs a real node01 with its own kubelet (ckalab up --nodes real, as root)")


def test_fresh_start_fails_every_access_check(lab):
    h = lab()
    r = grade(h)
    ip = node_ip(h)
    assert failed_ids(r) == {"test_config_file", "test_anonymous_refused", "test_token_checked",
                             "test_read_only_port_closed"}, r.render()
    assert check_of(r, "test_apiserver_allowed").passed and check_of(r, "test_kubelet_running").passed
    assert check_of(r, "test_anonymous_refused").message == (
        f"node01's kubelet answered an anonymous GET https://{ip}:10250/pods with 200 OK: anyone who reaches the "
        f"node can read it (and with the same rights run commands in its pods). {LOOK}")
    assert check_of(r, "test_token_checked").message == (
        f"node01's kubelet answered a GET https://{ip}:10250/pods with a token of ServiceAccount default/default "
        "with 200 OK, although ServiceAccount default/default has no rights on nodes: it does not ask the API "
        "server whether a caller may do what it asks. Look: kubectl auth can-i get nodes/proxy "
        f"--as=system:serviceaccount:default:default; on node01: grep -A3 '^authorization' {CONF}")
    assert check_of(r, "test_read_only_port_closed").message == (
        f"node01's kubelet still serves a read-only port: GET http://{ip}:10255/pods answered 200 OK without any "
        f"credentials. Look on node01: grep readOnlyPort {CONF}")
    assert check_of(r, "test_config_file").message == (
        f"{CONF} on node01 says authentication.anonymous.enabled: true; authentication.webhook.enabled: false; "
        "authorization.mode: AlwaysAllow; readOnlyPort: 10255. The kubelet takes its file as it is at its next "
        f"start. {LOOK}")
    # Every endpoint the task may name is open to anyone now; the API server's certificate gets in.
    for endpoint in ("runningpods/", "configz", "metrics", "stats/summary"):
        r = labs.check(h.lab.with_params(endpoint=endpoint), h.cluster)
        assert failed_ids(r) == {"test_config_file", "test_anonymous_refused", "test_token_checked",
                                 "test_read_only_port_closed"}, (endpoint, r.render())


def test_reference_solution_passes(lab):
    """For every endpoint the task may name and another read-only port; reset loosens it again."""
    h = lab(read_only_port=10277)
    assert "readOnlyPort: 10277" in conf_path(h).read_text()
    h.solve()
    for endpoint in ("pods", "runningpods/", "configz", "metrics", "stats/summary"):
        r = labs.check(h.lab.with_params(endpoint=endpoint), h.cluster)
        assert r.passed and r.score == r.max_score == 11, (endpoint, r.render())
    h.reset()  # ckalab's file back (the learner's kept aside), then loosened again
    assert "mode: AlwaysAllow" in conf_path(h).read_text()
    assert failed_ids(grade(h)) == {"test_config_file", "test_anonymous_refused", "test_token_checked",
                                    "test_read_only_port_closed"}


def secured_elsewhere(h, script: str) -> None:
    """A correct configuration made on node01 by `script`: every check passes."""
    on_node(h, script)
    wait_for(lambda: healthz_code(h) == "401", 60, "node01's kubelet to answer again")
    r = grade(h)
    assert r.passed and r.score == 11, r.render()


def test_insecure_keys_removed_passes(lab):
    """The loose keys deleted: KubeletConfiguration's defaults are the secure values."""
    h = lab()
    secured_elsewhere(h, """sed -i -e '/^  anonymous:/,+1d' -e '/^  webhook:/,+1d' -e '/^authorization:/,+1d' \\
  -e '/^readOnlyPort:/d' /var/lib/kubelet/config.yaml
systemctl stop kubelet
systemctl start kubelet""")
    text = conf_path(h).read_text()
    assert "anonymous" not in text and "authorization" not in text and "readOnlyPort" not in text


def test_rewritten_with_webhook_caches_passes(lab):
    """Flow mappings, webhook cache settings and another key order."""
    secured_elsewhere(lab(), """f=/var/lib/kubelet/config.yaml
grep -v -e '^readOnlyPort' -e '^authentication:' -e '^  anonymous:' -e '^  webhook:' -e '^    enabled:' \\
  -e '^  x509:' -e '^    clientCAFile:' -e '^authorization:' -e '^  mode:' $f > $f.new
cat >> $f.new <<'EOF'
authorization: {mode: Webhook, webhook: {cacheAuthorizedTTL: 1m0s, cacheUnauthorizedTTL: 10s}}
authentication:
  x509: {clientCAFile: /etc/kubernetes/pki/ca.crt}
  webhook: {enabled: true, cacheTTL: 30s}
  anonymous: {enabled: false}
readOnlyPort: 0
EOF
mv $f.new $f
systemctl restart kubelet""")


def test_whole_file_as_json_passes(lab):
    """The kubelet reads JSON as well (a subset of YAML): the whole file rewritten as JSON."""
    h = lab()
    settings()(doc := yaml.safe_load(conf_path(h).read_text()))
    secured_elsewhere(h, f"cat > {CONF}.json <<'EOF'\n{json.dumps(doc, indent=2)}\nEOF\n"
                         f"mv {CONF}.json {CONF}\nsystemctl restart kubelet")
    assert conf_path(h).read_text().startswith("{")


def test_kubectl_logs_and_exec_keep_working(lab, cleanup):
    """The API server's certificate still gets in: what the task's third point is for."""
    h = lab()
    h.solve()
    cleanup.append(("pod", "kubelet-security-probe", "-n", "default"))
    h.kubectl("run", "kubelet-security-probe", "-n", "default", "--image=busybox:1.36", "--restart=Never",
              "--overrides", '{"spec": {"nodeName": "node01", "terminationGracePeriodSeconds": 0}}',
              "--", "sh", "-c", "echo started; sleep 3600")
    h.kubectl("wait", "--for=condition=Ready", "pod/kubelet-security-probe", "-n", "default", "--timeout=60s")
    assert h.kubectl("exec", "-n", "default", "kubelet-security-probe", "--", "id", "-u").stdout.strip() == "0"
    assert h.kubectl("logs", "-n", "default", "kubelet-security-probe").stdout.strip() == "started"


def running_note(key: str, want: str, running: str) -> str:
    return (f" {CONF} already says {key}: {want}, but the running kubelet still has {running}: it reads the file "
            "only when it starts (look on node01: systemctl status kubelet).")


# id -> (change of the loosened file, whether the restarted kubelet comes back (None: no
# restart), failing checks, the check whose message is pinned, that message with {ip} for
# node01's address)
MUTATIONS = {
    "not-restarted": (settings(), None,
     {"test_anonymous_refused", "test_token_checked", "test_read_only_port_closed"}, "test_anonymous_refused",
     "node01's kubelet answered an anonymous GET https://{ip}:10250/pods with 200 OK: anyone who reaches the node "
     "can read it (and with the same rights run commands in its pods)."
     + running_note("authentication.anonymous.enabled", "false", "true") + f" {LOOK}"),
    "anonymous-off-only": (settings(webhook=False, mode="AlwaysAllow"), True,
     {"test_config_file", "test_token_checked"}, "test_token_checked",
     "node01's kubelet refused a GET https://{ip}:10250/pods with a token of ServiceAccount default/default as "
     "unauthenticated (401): it does not ask the API server who a bearer token belongs to, so no ServiceAccount "
     f"or token user can be allowed on it. {LOOK}"),
    "webhook-authn-but-always-allow": (settings(mode="AlwaysAllow"), True,
     {"test_config_file", "test_token_checked"}, "test_token_checked",
     "node01's kubelet answered a GET https://{ip}:10250/pods with a token of ServiceAccount default/default with "
     "200 OK, although ServiceAccount default/default has no rights on nodes: it does not ask the API server "
     "whether a caller may do what it asks. Look: kubectl auth can-i get nodes/proxy "
     f"--as=system:serviceaccount:default:default; on node01: grep -A3 '^authorization' {CONF}"),
    "webhook-authz-anonymous-still-on": (settings(anonymous=True), True,
     {"test_config_file", "test_anonymous_refused"}, "test_anonymous_refused",
     "node01's kubelet answered an anonymous GET https://{ip}:10250/pods with 403 Forbidden: it let the caller in "
     "as system:anonymous and only its authorization refused it. The task wants such a request refused as "
     f"unauthenticated (401). {LOOK}"),
    "webhook-authz-without-webhook-authn": (settings(webhook=False), True,
     {"test_config_file", "test_token_checked"}, "test_config_file",
     f"{CONF} on node01 says authentication.webhook.enabled: false. The kubelet takes its file as it is at its "
     f"next start. {LOOK}"),
    "read-only-port-left-open": (settings(read_only=10255), True,
     {"test_config_file", "test_read_only_port_closed"}, "test_read_only_port_closed",
     "node01's kubelet still serves a read-only port: GET http://{ip}:10255/pods answered 200 OK without any "
     f"credentials. Look on node01: grep readOnlyPort {CONF}"),
    "x509-section-dropped": (lambda doc: (settings()(doc), doc["authentication"].pop("x509")), True,
     {"test_apiserver_allowed"}, "test_apiserver_allowed",
     "node01's kubelet refused a GET https://{ip}:10250/pods with the API server's client certificate "
     "(/etc/kubernetes/pki/apiserver-kubelet-client.crt) as unauthenticated (401): it does not accept client "
     "certificates of the cluster CA, so kubectl logs and kubectl exec fail on this node. Look on node01: grep -A8 "
     f"'^authentication' {CONF}; openssl x509 -in /etc/kubernetes/pki/apiserver-kubelet-client.crt -noout -issuer "
     "(on the controlplane)"),
    "mode-lowercase": (settings(mode="webhook"), False,
     {"test_kubelet_running", "test_config_file"} | AFTER_RUNNING, "test_kubelet_running",
     "node01's kubelet does not answer on {ip}:10250 (connection refused): it is not running. Its log ends with: "
     "failed to run Kubelet: unknown authorization mode webhook Look on node01: systemctl status kubelet; "
     "journalctl -u kubelet -n 30"),
    "enabled-quoted": (settings(anonymous="false"), False,
     {"test_kubelet_running", "test_config_file"} | AFTER_RUNNING, "test_config_file",
     f"{CONF} on node01 says authentication.anonymous.enabled: 'false' is no boolean (true or false, unquoted). "
     f"The kubelet takes its file as it is at its next start. {LOOK}"),
    "tab-indented": ("tab", False,
     {"test_kubelet_running", "test_config_file"} | AFTER_RUNNING, "test_config_file",
     f"{CONF} on node01 is not valid YAML (line 10, column 1): found character '\\t' that cannot start any token. "
     f"The kubelet cannot start with it. Look on node01: cat -A {CONF}"),
    "edited-a-copy": ("copy", True,
     {"test_config_file", "test_anonymous_refused", "test_token_checked", "test_read_only_port_closed"},
     "test_anonymous_refused",
     "node01's kubelet answered an anonymous GET https://{ip}:10250/pods with 200 OK: anyone who reaches the node "
     f"can read it (and with the same rights run commands in its pods). {LOOK}"),
    "kubelet-stopped": ("stop", None,
     {"test_kubelet_running"} | AFTER_RUNNING, "test_kubelet_running",
     "node01's kubelet does not answer on {ip}:10250 (connection refused): it is not running. Its log ends with: "
     "{log} Look on node01: systemctl status kubelet; journalctl -u kubelet -n 30"),
}


@pytest.mark.parametrize("case", MUTATIONS)
def test_wrong_configurations_fail(lab, case):
    change, comes_back, failing, check, message = MUTATIONS[case]
    h = lab()
    ip = node_ip(h)
    if change == "tab":
        settings()(doc := yaml.safe_load(conf_path(h).read_text()))
        write(h, yaml.safe_dump(doc, sort_keys=False).replace("\n    enabled: false", "\n\tenabled: false", 1))
    elif change == "copy":  # the right settings in a file the kubelet does not read
        settings()(doc := yaml.safe_load(conf_path(h).read_text()))
        conf_path(h).with_name("config-secure.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    elif change == "stop":
        h.solve()
        on_node(h, "systemctl stop kubelet")
    else:
        edit(h, change)
    if comes_back is not None:
        restart(h, comes_back)
    r = grade(h)
    assert failed_ids(r) == failing, r.render()
    got = check_of(r, check).message
    if "{log}" in message:
        assert got.startswith(message.split("{log}")[0].format(ip=ip)) and got.endswith(message.split("{log}")[1]), got
    else:
        assert got == message.format(ip=ip)
    if "test_kubelet_running" in failing:  # the requests to the kubelet wait for it to run
        for c in AFTER_RUNNING:
            assert check_of(r, c).message.startswith("Not checked yet"), check_of(r, c).message


def test_reset_gives_ckalab_s_configuration_back_from_a_broken_kubelet(lab):
    h = lab()
    write(h, "this: [is not\n")
    restart(h, comes_back=False)
    h.reset()  # ckalab's file back (the broken one kept aside), the kubelet running; then loosened again
    assert answered_code(h) == "200"  # loosened: anonymous callers get in
    labs.contain(h.lab, h.cluster)
    assert conf_path(h).read_bytes() == conf_path(h).parents[3].joinpath("kubelet-config.orig.yaml").read_bytes()
    assert answered_code(h) == "401"
    kept = sorted((h.cluster.dir / "kubelet-config.edited").glob("node01.*.yaml"))
    assert kept and any("mode: AlwaysAllow" in p.read_text() for p in kept)  # the loosened file, kept aside


def test_reset_starts_a_kubelet_stopped_with_ckalab_s_file(lab):
    """The right answer is ckalab's file byte for byte: nothing to restore, the kubelet must
    still come back (restoring the control plane starts a stopped kubelet)."""
    h = lab()
    h.solve()
    assert conf_path(h).read_bytes() == conf_path(h).parents[3].joinpath("kubelet-config.orig.yaml").read_bytes()
    on_node(h, "systemctl stop kubelet")
    h.reset()
    assert answered_code(h) == "200" and grade(h).score == 4  # loosened again: running, the certificate gets in
