"""What makes a cold `ckalab check` fast, tested for meaning (the timings live in bench/cold_check.py):

- Kube's plain-dict reads (REST layer + discovery) give what the dynamic client gives, its reviews
  what the typed APIs answer, its errors the typed APIs' ApiException subclasses;
- the `kubernetes` package registered without its __init__ still serves every part on request;
- ckalab's kubeconfig shape becomes the Configuration the official loader makes, and every other
  shape goes to that loader;
- graders declare fixtures and skips through ckalab.grading: graded without pytest, and the same
  grader under pytest gives the same results;
- a cold check imports neither pytest, pydantic nor kubernetes.config.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from ckalab import kube as kube_mod
from ckalab.kube import Kube
from ckalab.waiting import WaitTimeout, wait_for

RBAC = "rbac.authorization.k8s.io/v1"


def _python(code: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter (nothing imported yet, as a cold `ckalab` process)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _json_of(proc: subprocess.CompletedProcess):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- plain reads and reviews -----------------------------------------------------------------

@pytest.mark.parametrize("api_version,kind,name,namespace", [
    ("v1", "Namespace", "default", None),
    ("v1", "ServiceAccount", "default", "default"),
    ("v1", "ConfigMap", "kube-root-ca.crt", "kube-system"),
    (RBAC, "ClusterRole", "admin", None),
    (RBAC, "ClusterRoleBinding", "cluster-admin", None),
    ("v1", "Secret", "no-such-secret", "default"),
    ("v1", "ServiceAccount", "default", None),  # a namespaced kind asked without a namespace
])
def test_get_is_what_the_dynamic_client_reads(kube, api_version, kind, name, namespace):
    res = kube.dynamic.resources.get(api_version=api_version, kind=kind)
    try:
        theirs = res.get(name=name, namespace=namespace if res.namespaced else None).to_dict()
    except Exception:  # noqa: BLE001 - not found, in the dynamic client's words
        theirs = None
    assert kube.get(api_version, kind, name, namespace) == theirs


@pytest.mark.parametrize("api_version,kind,namespace,selector", [
    (RBAC, "ClusterRole", None, "kubernetes.io/bootstrapping=rbac-defaults"),
    (RBAC, "RoleBinding", None, None),
    ("v1", "ServiceAccount", "kube-system", None),
    ("v1", "Namespace", "default", None),  # a namespace given for a cluster-scoped kind is ignored
])
def test_list_is_what_the_dynamic_client_lists(kube, api_version, kind, namespace, selector):
    res = kube.dynamic.resources.get(api_version=api_version, kind=kind)
    kw = {"label_selector": selector} if selector else {}
    if res.namespaced and namespace:
        kw["namespace"] = namespace
    got = {}

    def both():
        """The two lists, taken again while a controller changed an object in between (right after
        `up` the aggregation controller still rewrites admin/edit/view: resourceVersion 276 -> 277)."""
        got["theirs"] = [i.to_dict() for i in res.get(**kw).items]
        got["mine"] = kube.list(api_version, kind, namespace, selector)
        return got["mine"] == got["theirs"]
    try:
        wait_for(both, 10, "two lists of the same objects")
    except WaitTimeout:
        pass
    mine, theirs = got["mine"], got["theirs"]
    assert mine == theirs and mine and all(i["kind"] == kind and i["apiVersion"] == api_version for i in mine)


def test_kind_not_served_is_a_clear_error(kube):
    from ckalab.errors import CkalabError

    with pytest.raises(CkalabError, match=r"^The cluster does not serve Nothing in v1\.$"):
        kube.get("v1", "Nothing", "x")
    with pytest.raises(CkalabError, match=r"^The cluster does not serve Role in nothere\.example/v1\.$"):
        kube.list("nothere.example/v1", "Role")


@pytest.mark.parametrize("user,verb,resource,namespace,kw", [
    ("kubernetes-admin", "delete", "nodes", None, {"groups": ["kubeadm:cluster-admins"]}),
    ("system:anonymous", "list", "secrets", "default", {}),
    ("system:kube-scheduler", "create", "pods", "default", {"subresource": "binding"}),
    ("system:kube-controller-manager", "get", "secrets", "kube-system", {"name": "x"}),
    ("someone", "create", "roles", "default", {"group": "rbac.authorization.k8s.io", "groups": []}),
])
def test_can_answers_as_the_typed_review(kube, user, verb, resource, namespace, kw):
    from kubernetes import client

    attrs = client.V1ResourceAttributes(verb=verb, resource=resource, namespace=namespace,
                                        group=kw.get("group", ""), subresource=kw.get("subresource"),
                                        name=kw.get("name"))
    typed = kube.authz.create_subject_access_review(client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(user=user, groups=kw.get("groups"), resource_attributes=attrs)))
    assert kube.can(user, verb, resource, namespace, **kw) is bool(typed.status.allowed)


def test_requests_carry_the_api_clients_user_agent(kube):
    # classroom's audit timeline tells ckalab's own requests apart by it
    assert kube_mod._user_agent() == kube.api.user_agent


def _token_kubeconfig(kube, cluster, tmp_path) -> Path:
    """A kubeconfig for the default ServiceAccount of `default` by token (the official loader's shape)."""
    token = kube.post("/api/v1/namespaces/default/serviceaccounts/default/token",
                      {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                       "spec": {"expirationSeconds": 600}})["status"]["token"]
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    admin["users"] = [{"name": "sa", "user": {"token": token}}]
    admin["contexts"][0]["context"]["user"] = "sa"
    path = tmp_path / "token.conf"
    path.write_text(yaml.safe_dump(admin))
    return path


def test_token_kubeconfig_goes_to_the_official_loader_and_reads_carry_the_token(kube, cluster, tmp_path):
    from kubernetes.client.exceptions import ForbiddenException

    path = _token_kubeconfig(kube, cluster, tmp_path)
    assert kube_mod.simple_configuration(path) is None
    sa = Kube(path, timeout=5)
    assert sa.whoami()["username"] == "system:serviceaccount:default:default"
    # discovery is open to every authenticated user; the secret is not: the typed APIs' 403 type
    with pytest.raises(ForbiddenException) as exc:
        sa.get("v1", "Secret", "anything", "kube-system")
    assert exc.value.status == 403 and "cannot get resource \"secrets\"" in kube_mod.api_error_text(exc.value)
    assert sa.ping()


# --- kubeconfig -> Configuration ---------------------------------------------------------------

def _official(path: Path, context: str | None = None):
    from kubernetes import config

    return config.new_client_from_config(config_file=str(path), context=context).configuration


def test_admin_kubeconfig_becomes_the_official_configuration(cluster):
    path = Path(cluster.kubeconfig)
    mine, theirs = kube_mod.simple_configuration(path), _official(path)
    assert mine is not None
    for attr in ("host", "verify_ssl", "tls_server_name", "proxy", "assert_hostname", "api_key", "ca_cert_data"):
        assert getattr(mine, attr) == getattr(theirs, attr), attr
    for attr in ("ssl_ca_cert", "cert_file", "key_file"):
        assert Path(getattr(mine, attr)).read_bytes() == Path(getattr(theirs, attr)).read_bytes(), attr
        assert stat.S_IMODE(Path(getattr(mine, attr)).parent.stat().st_mode) == 0o700


def _variant(cluster, tmp_path, change) -> Path:
    doc = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    change(doc)
    path = tmp_path / "variant.conf"
    path.write_text(yaml.safe_dump(doc))
    return path


def _cluster_entry(doc):
    return doc["clusters"][0]["cluster"]


def _user_entry(doc):
    return doc["users"][0]["user"]


@pytest.mark.parametrize("change", [
    lambda d: _cluster_entry(d).update({"insecure-skip-tls-verify": True}),
    lambda d: _cluster_entry(d).update({"proxy-url": "http://127.0.0.1:9"}),
    lambda d: _cluster_entry(d).update({"tls-server-name": "kubernetes"}),
    lambda d: _cluster_entry(d).update({"server": _cluster_entry(d)["server"].replace("https", "http")}),
    lambda d: _cluster_entry(d).update({"certificate-authority": "/nonexistent/ca.crt"}),
    lambda d: _user_entry(d).update({"client-key-data": "not base64!"}),
    lambda d: _user_entry(d).update({"client-key-data": ""}),
    lambda d: _user_entry(d).pop("client-key-data"),
    lambda d: _user_entry(d).update({"exec": {"command": "true", "apiVersion": "client.authentication.k8s.io/v1"}}),
    lambda d: d.update({"current-context": "missing"}),
    lambda d: d["users"].append(dict(d["users"][0])),  # two users of one name
    lambda d: d.update({"extensions": []}),
], ids=["insecure", "proxy", "sni", "http", "ca-file", "bad-base64", "empty-key", "no-key", "exec",
        "unknown-context", "duplicate-user", "extensions"])
def test_any_other_kubeconfig_shape_goes_to_the_official_loader(cluster, tmp_path, change):
    assert kube_mod.simple_configuration(_variant(cluster, tmp_path, change)) is None


def test_context_argument_is_honoured(cluster, tmp_path):
    def second_context(doc):
        doc["contexts"].append({"name": "other", "context": {"cluster": "kubernetes", "user": "kubernetes-admin"}})
        doc["current-context"] = "missing"  # only the named context may be used
    path = _variant(cluster, tmp_path, second_context)
    assert kube_mod.simple_configuration(path) is None
    assert kube_mod.simple_configuration(path, "other").host == _official(path, "other").host


def test_damaged_kubeconfig_gets_the_official_loaders_error(tmp_path):
    from kubernetes.config import ConfigException

    path = tmp_path / "broken.conf"
    path.write_text("apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncontexts: []\n")
    with pytest.raises(ConfigException):
        Kube(path)


# --- the kubernetes package without its __init__ ----------------------------------------------

def test_lazy_package_serves_every_part(cluster):
    out = _json_of(_python(f"""
        import importlib.metadata, json, sys
        from ckalab.kube import Kube
        k = Kube({str(cluster.kubeconfig)!r})
        assert k.get("v1", "Namespace", "default")["metadata"]["name"] == "default"
        light = sorted(m for m in ("pydantic", "dateutil", "kubernetes.config", "requests", "kubernetes.stream",
                                   "kubernetes.dynamic", "kubernetes.client.api_client") if m in sys.modules)
        import kubernetes
        lazy = type(kubernetes).__name__
        version = kubernetes.__version__ == importlib.metadata.version("kubernetes")
        from kubernetes import client, watch
        from kubernetes.config import ConfigException
        typed = k.core.read_namespace("default").metadata.name
        model = client.V1ObjectMeta(name="x").name
        dyn = k.dynamic.resources.get(api_version="v1", kind="Namespace").get(name="default").metadata.name
        config = kubernetes.config.new_client_from_config is not None
        try:
            kubernetes.no_such_part
            missing = "no error"
        except AttributeError as exc:
            missing = str(exc)
        complete = all(hasattr(kubernetes, p) for p in ("leaderelection", "informer", "stream", "utils"))
        print(json.dumps([light, lazy, version, typed, model, dyn, config, missing, complete]))
    """))
    assert out == [[], "_LazyPackage", True, "default", "x", "default", True,
                   "module 'kubernetes' has no attribute 'no_such_part'", True]


def test_package_imported_first_is_left_alone():
    out = _json_of(_python("""
        import json, kubernetes
        from ckalab import kube
        kube.lazy_kubernetes()
        import sys
        print(json.dumps([type(sys.modules["kubernetes"]).__name__, "config" in vars(kubernetes)]))
    """))
    assert out == ["module", True]


# --- graders without pytest -----------------------------------------------------------------------

GRADER = '''
from ckalab.grading import check, expect, fixture, skip

EVENTS = []


@fixture(scope="session")
def once(lab):
    EVENTS.append("once")
    yield lab.params["n"]
    EVENTS.append("once down")


@fixture
def each(once):
    EVENTS.append("each")
    return once + 1


@fixture(name="renamed")
def _hidden():
    return "r"


@fixture
def no_traffic(lab):
    skip("no traffic here")


@check(1, "first")
def test_first(once, each, renamed):
    expect(each == 3 and renamed == "r", f"each {each} renamed {renamed}")


@check(1, "second")
def test_second(each):
    expect(each == 4, f"each is {each}")


@check(1, "skipped in a fixture")
def test_skipped(no_traffic):
    pass


@check(1, "skipped in the check")
def test_skipped_here(once):
    skip("not on this backend")


@check(1, "after a skip", after="test_skipped")
def test_after():
    pass


@check(1, "events")
def test_events():
    expect(False, ",".join(EVENTS))
'''

GRADE = """
    import json, sys
    from types import SimpleNamespace
    from ckalab import grading
    lab = SimpleNamespace(id="shim", grader={grader!r}, seed=None, params={{"n": 2}}, workdir="/nonexistent")
    r = grading.grade(grading.Context(lab, None))
    print(json.dumps([[c.id, c.state, c.message] for c in r.checks] + [["pytest", "pytest" in sys.modules]]))
"""


def test_grading_fixture_and_skip_without_pytest_as_with_it(tmp_path):
    grader = tmp_path / "shim.py"
    grader.write_text(GRADER)
    cold = _json_of(_python(GRADE.format(grader=str(grader))))
    assert cold[-1] == ["pytest", False]
    assert cold[:-1] == [
        ["test_first", "passed", ""],
        ["test_second", "failed", "each is 3"],
        ["test_skipped", "unavailable", "no traffic here"],
        ["test_skipped_here", "unavailable", "not on this backend"],
        ["test_after", "unavailable",
         'it builds on "skipped in a fixture", which is not available on this backend either'],
        ["test_events", "failed", "once,each,each"],
    ]
    # In this process pytest is imported: the same file's fixtures are pytest's, with the same results.
    warm = _json_of(_python("import pytest\n" + textwrap.dedent(GRADE.format(grader=str(grader)))))
    assert warm[:-1] == cold[:-1] and warm[-1] == ["pytest", True]


def test_grading_skip_is_not_swallowed_by_except_exception():
    from ckalab import grading

    with pytest.raises(BaseException) as exc:  # noqa: PT011 - pytest's own skip here, grading's without pytest
        try:
            grading.skip("why")
        except Exception:  # noqa: BLE001 - what a grader might write
            pass
    assert not isinstance(exc.value, Exception) and grading._skip_reason(exc.value) == "why"


# --- the cold CLI path ----------------------------------------------------------------------------

@pytest.mark.parametrize("lab_id", ["rbac-role", "network-policies", "kubeconfig"])
def test_cold_check_imports_only_what_it_needs(lab_harness, cluster, lab_id):
    h = lab_harness(lab_id)
    h.solve()
    out = _json_of(_python(f"""
        import json, sys
        from ckalab.cli import _main
        code = _main(["check", {lab_id!r}, "--name", {cluster.name!r}])
        heavy = ("pytest", "_pytest", "pydantic", "dateutil", "kubernetes.config", "requests", "oauthlib",
                 "kubernetes.client.api_client", "kubernetes.stream", "websocket", "ckalab.exports")
        print(json.dumps([code, sorted(m for m in heavy if m in sys.modules)]))
    """))
    assert out == [0, []]


def test_node_shell_path_loads_no_cryptography():
    # `ckalab ssh` and `ckalab node-file` run once per call of a lab script's loop; the real
    # nodes' module signs certificates only when a node starts.
    out = _json_of(_python("""
        import json, sys
        import ckalab.cluster.local, ckalab.cluster.nodes, ckalab.cluster.nodes.private_registry
        print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] == "cryptography" or m == "ckalab.pki")))
    """))
    assert out == []


# --- `ckalab up --nodes`: asked of the backend, not by its name -----------------------------------

def test_nodes_choice_is_the_backends(tmp_path, monkeypatch):
    from ckalab.cluster import backend_class
    from ckalab.errors import CkalabError

    kind = backend_class("kind")("nodes-test")
    with pytest.raises(CkalabError, match=r"cluster 'nodes-test' uses kind, which has no --nodes real\.$"):
        kind.check_nodes("real")
    monkeypatch.setattr(backend_class("local"), "node_modes", ("kwok", "real"))
    with pytest.raises(CkalabError, match=r"^--nodes real is for the local backend; cluster 'nodes-test' uses kind"):
        kind.check_nodes("real")
    backend_class("local")("nodes-test").check_nodes("real")  # offered: no error


def test_credential_files_come_back_when_removed(cluster):
    # In a process of its own: this session's clients keep using their files.
    out = _json_of(_python(f"""
        import json, shutil
        from pathlib import Path
        from ckalab import kube
        first = kube.simple_configuration(Path({str(cluster.kubeconfig)!r}))
        shutil.rmtree(Path(first.key_file).parent)  # as a cleaner of /tmp would, under a long-lived kernel
        again = kube.simple_configuration(Path({str(cluster.kubeconfig)!r}))
        k = kube.Kube({str(cluster.kubeconfig)!r})
        print(json.dumps([Path(again.key_file).is_file(), k.get("v1", "Namespace", "default")["metadata"]["name"]]))
    """))
    assert out == [True, "default"]
