"""admission-plugins on real nodes: the learner enables a plugin in the API server's static pod
manifest; the reference solution and other correct edits pass (each plugin's effect seen through a
server-side dry run), wrong edits fail with their message, and a misspelt plugin name (the API
server then does not start) is reported quickly from the node's manifest. Skipped unless
CKALAB_REAL_NODES=1 (root).

    CKALAB_REAL_NODES=1 CKALAB_TEST_HOME=/tmp/ckt-x CKALAB_TEST_KEEP=1 \\
        .venv/bin/pytest tests/labs/test_admission_plugins.py -x -q

Every test starts from `reset` (ckalab's manifest restored, /readyz answering) and the module ends
with the control plane restored.
"""

from __future__ import annotations

import re
import shutil
import time

import pytest
from conftest import LabHarness, check_of, failed_ids, put_api_server_manifest, wait_api_server_refused

from ckalab import labs
from ckalab.waiting import wait_for

LAB = "admission-plugins"
PLUGINS = ("PodNodeSelector", "AlwaysPullImages", "DenyServiceExternalIPs")
ENABLE = re.compile(r"^( *- --enable-admission-plugins=).*$", re.M)


@pytest.fixture(scope="module")
def contained(real_nodes):
    yield real_nodes
    labs.restore_control_plane(real_nodes)  # never leave the cluster broken


@pytest.fixture
def lab(contained):
    def make(plugin: str = "PodNodeSelector") -> LabHarness:
        h = LabHarness(contained, LAB)
        h.lab = h.lab.with_params(plugin=plugin)
        if h.workdir.exists():
            shutil.rmtree(h.workdir)
        h.reset()
        return h
    return make


def manifest_path(h):
    return h.cluster.etc / "manifests" / "kube-apiserver.yaml"


def edit(h, change) -> None:
    """The manifest with `change` made (put there the quick way: conftest.put_api_server_manifest)."""
    put_api_server_manifest(h.cluster, change(manifest_path(h).read_text()))


def wait_restarted(h) -> None:
    """Until the kubelet runs the edited manifest's command line and the API server answers."""
    wait_for(lambda: h.cluster.runs_manifest("kube-apiserver") and h.kube.ping(), 150,
             "the API server to run with the edited manifest")


def enable(value: str, extra: str = ""):
    """An edit: --enable-admission-plugins=VALUE, and EXTRA lines (flags) after it."""
    def change(text):
        text, n = ENABLE.subn(lambda m: m.group(1) + value + "".join(f"\n{m.group(1)[:-len('--enable-admission-plugins=')]}{x}"
                                                                     for x in extra.split("\n") if x), text)
        assert n == 1
        return text
    return change


def grade(h):
    """h.grade() once the cluster's status says running: right after a restart of the API server,
    its status can say degraded for a moment (a slow /readyz on a loaded machine), and
    grading.run refuses a cluster that is not running."""
    wait_for(lambda: h.cluster.status().state == "running", 60, "the cluster's status to say running")
    return h.grade()


def annotate(h, value: str, namespace: str | None = None) -> None:
    h.kubectl("annotate", "namespace", namespace or h.params["namespace"], "--overwrite",
              f"scheduler.alpha.kubernetes.io/node-selector={value}")


def test_every_variant_of_the_lab_is_tested():
    assert set(labs.load(LAB).data["params"]["plugin"]["choices"]) == set(PLUGINS)


# --- the start, and each variant's reference solution -------------------------------------------

def test_setup_leaves_the_plugin_off_and_the_checks_say_what_is_missing(lab):
    h = lab("PodNodeSelector")
    assert "--enable-admission-plugins=NodeRestriction\n" in manifest_path(h).read_text()
    r = grade(h)
    assert failed_ids(r) == {"test_flags", "test_effect"}
    assert check_of(r, "test_flags").message == (
        "--enable-admission-plugins=NodeRestriction does not name PodNodeSelector. Look: grep -- admission-plugins "
        "/etc/kubernetes/manifests/kube-apiserver.yaml (on the node: ckalab ssh controlplane).")
    assert check_of(r, "test_effect").message == (
        "Namespace dev-apps has no annotation scheduler.alpha.kubernetes.io/node-selector, so PodNodeSelector gives "
        "its pods no node selector. Look: kubectl get namespace dev-apps -o yaml.")


@pytest.mark.parametrize("plugin", PLUGINS)
def test_each_variant_reference_solution_passes(lab, plugin):
    h = lab(plugin)
    if plugin != "PodNodeSelector":
        r = grade(h)  # the plugin is off: its effect is missing
        assert failed_ids(r) == {"test_flags", "test_effect"}
        assert f"the API server that answers does not run {plugin}" in check_of(r, "test_effect").message
    h.solve()
    r = grade(h)
    assert r.passed and r.score == r.max_score == 10, r.render()


def test_reset_restores_ckalabs_manifest_and_keeps_the_edit_aside(lab):
    h = lab("AlwaysPullImages")
    h.solve()
    h.reset()
    assert "--enable-admission-plugins=NodeRestriction\n" in manifest_path(h).read_text()
    assert h.kube.ping()
    assert sorted((h.cluster.dir / "manifests.edited").glob("kube-apiserver.*.yaml"))


# --- correct edits in other forms ---------------------------------------------------------------

def test_plugin_first_and_a_wider_node_selector_passes(lab):
    h = lab("PodNodeSelector")
    annotate(h, "env=development,zone=a")
    edit(h, enable("PodNodeSelector,NodeRestriction"))
    wait_restarted(h)
    r = grade(h)
    assert r.passed, r.render()


def test_the_flag_given_twice_passes(lab):
    """The API server appends a list flag's repeated values: a second line is a correct answer."""
    h = lab("AlwaysPullImages")
    edit(h, enable("NodeRestriction", "--enable-admission-plugins=AlwaysPullImages"))
    wait_restarted(h)
    r = grade(h)
    assert r.passed, r.render()


def test_several_plugins_at_once_passes(lab):
    h = lab("DenyServiceExternalIPs")
    edit(h, enable("NodeRestriction,AlwaysPullImages,DenyServiceExternalIPs"))
    wait_restarted(h)
    r = grade(h)
    assert r.passed, r.render()


# --- wrong edits --------------------------------------------------------------------------------

def test_a_misspelt_plugin_keeps_the_api_server_down_and_is_reported_from_the_node(lab):
    h = lab("PodNodeSelector")
    annotate(h, "env=development")
    since = time.time()
    edit(h, enable("NodeRestriction,PodNodeSelecter"))
    wait_api_server_refused(h.cluster, since)
    t = time.monotonic()
    r = labs.check(h.lab, h.cluster)
    assert time.monotonic() - t < 20  # never hangs on the API server that is down
    assert check_of(r, "test_flags").message == (
        "--enable-admission-plugins=NodeRestriction,PodNodeSelecter names 'PodNodeSelecter', which is no admission "
        "plugin of this API server (names are case-sensitive): it refuses to start. Look: the container's log "
        "(crictl ps -a --name kube-apiserver, then crictl logs CONTAINER-ID; on the node: ckalab ssh controlplane).")
    msg = check_of(r, "test_running").message
    assert msg.startswith("The API server at https://127.0.0.1:") and " does not answer (" in msg, msg
    assert check_of(r, "test_effect").message.startswith("Not checked yet")


MUTATIONS = {
    # name: (plugin, action, failing check, phrase of its message, whether the API server runs afterwards;
    # None: the manifest is not changed, nothing to wait for)
    "the flag removed": (
        "DenyServiceExternalIPs", lambda h: edit(h, lambda t: ENABLE.sub("", t).replace("\n\n", "\n")),
        "test_flags", "/etc/kubernetes/manifests/kube-apiserver.yaml has no --enable-admission-plugins: only the "
                      "default plugins run (no DenyServiceExternalIPs, no NodeRestriction)", True),
    "NodeRestriction replaced by the plugin": (
        "AlwaysPullImages", lambda h: edit(h, enable("AlwaysPullImages")),
        "test_flags", "--enable-admission-plugins=AlwaysPullImages no longer names NodeRestriction", True),
    "plugin enabled and disabled": (
        "AlwaysPullImages",
        lambda h: edit(h, enable("NodeRestriction,AlwaysPullImages", "--disable-admission-plugins=AlwaysPullImages")),
        "test_flags", "--disable-admission-plugins=AlwaysPullImages names AlwaysPullImages, which "
                      "--enable-admission-plugins names too", False),
    "plugin only under --disable-admission-plugins": (
        "AlwaysPullImages", lambda h: edit(h, enable("NodeRestriction", "--disable-admission-plugins=AlwaysPullImages")),
        "test_flags", "--enable-admission-plugins=NodeRestriction does not name AlwaysPullImages", True),
    "plugin name in lower case": (
        "DenyServiceExternalIPs", lambda h: edit(h, enable("NodeRestriction,denyserviceexternalips")),
        "test_flags", "names 'denyserviceexternalips', which is no admission plugin of this API server", False),
    "a space after the comma": (
        "AlwaysPullImages", lambda h: edit(h, enable("NodeRestriction, AlwaysPullImages")),
        "test_flags", "names ' AlwaysPullImages', which is no admission plugin", False),
    "another plugin than the task's": (
        "DenyServiceExternalIPs", lambda h: edit(h, enable("NodeRestriction,AlwaysPullImages")),
        "test_effect", "A Service with spec.externalIPs [192.0.2.10] in namespace dev-apps is accepted (server-side dry "
                       "run): the API server that answers does not run DenyServiceExternalIPs", True),
    "a copy edited outside the manifests folder": (
        "AlwaysPullImages",
        lambda h: (h.cluster.etc / "kube-apiserver.yaml").write_text(enable("NodeRestriction,AlwaysPullImages")(
            manifest_path(h).read_text())),
        "test_effect", "with imagePullPolicy IfNotPresent (server-side dry run) keeps imagePullPolicy IfNotPresent: "
                       "the API server that answers does not run AlwaysPullImages", None),
    "plugin on but the namespace not annotated": (
        "PodNodeSelector", lambda h: edit(h, enable("NodeRestriction,PodNodeSelector")),
        "test_effect", "Namespace dev-apps has no annotation scheduler.alpha.kubernetes.io/node-selector", True),
    "namespace annotated with another selector": (
        "PodNodeSelector", lambda h: annotate(h, "env=production"),
        "test_effect", "Namespace dev-apps's annotation scheduler.alpha.kubernetes.io/node-selector is "
                       "'env=production': its pods would not get env=development", None),
    "annotation without the plugin": (
        "PodNodeSelector", lambda h: annotate(h, "env=development"),
        "test_effect", "A pod created in namespace dev-apps (server-side dry run) gets node selector none, not "
                       "env=development: the API server that answers does not run PodNodeSelector", None),
    "annotation on another namespace": (
        "PodNodeSelector", lambda h: (annotate(h, "env=development", "default"),
                                      edit(h, enable("NodeRestriction,PodNodeSelector"))),
        "test_effect", "Namespace dev-apps has no annotation scheduler.alpha.kubernetes.io/node-selector", True),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_wrong_edit_fails(lab, name):
    plugin, action, failing, phrase, runs = MUTATIONS[name]
    h = lab(plugin)
    try:
        action(h)
        if runs:
            wait_restarted(h)
        elif runs is False:
            wait_for(lambda: not h.kube.ping(), 90, "the API server to stop")
        r = labs.check(h.lab, h.cluster)
        assert not r.passed
        msg = check_of(r, failing).message
        assert phrase in msg, msg
    finally:
        (h.cluster.etc / "kube-apiserver.yaml").unlink(missing_ok=True)
        h.kubectl("annotate", "namespace", "default", "scheduler.alpha.kubernetes.io/node-selector-", check=False)
