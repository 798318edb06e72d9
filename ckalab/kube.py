"""One API client bound to a kubeconfig file, plus the few operations labs and graders share.

Everything here takes an explicit kubeconfig: the learner switches contexts in their own
kubeconfig as part of the tasks, so we never touch the global default configuration.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
import threading
import types
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from .errors import ClusterNotRunning, CkalabError
from .waiting import wait_for

if TYPE_CHECKING:  # the client is imported when a Kube is made, not when this module is
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    from kubernetes.dynamic import DynamicClient

LAB_LABEL = "ckalab.io/lab"
FIELD_MANAGER = "ckalab"


# --- the official client, imported by the parts a check uses ---------------------------------
#
# `import kubernetes` runs the package's __init__, which imports every part of the client:
# config (with requests, requests-oauthlib and oauthlib, for auth providers our clusters do not
# use), dynamic, watch, stream (websocket), utils, leaderelection and informer. A cold `ckalab
# check` needs the REST layer and Configuration only (Kube below) and, for the kubeconfigs
# ckalab writes, none of config. So the package is registered without running its __init__
# (_LazyPackage) and its parts are imported as they are asked for: `kubernetes.client`, `from
# kubernetes import watch` and `kubernetes.config.load_kube_config` all work as usual, and any
# other attribute runs the real __init__ first. Nothing of the client is copied or changed.

_PACKAGE_LOCK = threading.RLock()


class _LazyPackage(types.ModuleType):
    """The `kubernetes` package before its __init__ has run (see above)."""

    def __getattr__(self, name: str):
        with _PACKAGE_LOCK:
            if name in self.__dict__:  # set by another thread meanwhile
                return self.__dict__[name]
            if not name.startswith("__"):
                try:
                    return importlib.import_module(f"{self.__name__}.{name}")
                except ModuleNotFoundError as exc:
                    if exc.name != f"{self.__name__}.{name}":
                        raise  # a part that exists but lacks a dependency: its own error
            if not self.__dict__.get("_ckalab_complete"):
                self._ckalab_complete = True
                self.__spec__.loader.exec_module(self)  # the package's own __init__, as `import` runs it
                if name in self.__dict__:
                    return self.__dict__[name]
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")


def lazy_kubernetes() -> None:
    """Make `kubernetes` a _LazyPackage unless it is imported already (then nothing changes).
    Anything unexpected leaves the normal import to happen, with its own errors. Called before a
    Kube is made and before a grader is imported (a grader's `from kubernetes.client.rest import
    ApiException` would otherwise run the whole __init__)."""
    with _PACKAGE_LOCK:
        if "kubernetes" in sys.modules:
            return
        import importlib.util

        spec = importlib.util.find_spec("kubernetes")
        if spec is None or spec.origin is None or not spec.submodule_search_locations or spec.loader is None:
            return
        try:
            source = Path(spec.origin).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return
        # The two names the __init__ defines besides its parts; the dynamic client's discovery
        # imports __version__ (its cache is keyed by it).
        names = dict(re.findall(r'^(__version__|__project__)\s*=\s*["\']([^"\']*)["\']\s*$', source, re.M))
        if "__version__" not in names:
            return
        mod = importlib.util.module_from_spec(spec)
        mod.__dict__.update(names)
        mod.__class__ = _LazyPackage
        sys.modules["kubernetes"] = mod


# --- kubeconfig -> ApiClient --------------------------------------------------------------------
#
# ckalab's own clusters have kubeconfigs of one simple shape: an https server, the CA and a client
# certificate and key, all embedded. For exactly that shape the Configuration is made here, as the
# official loader makes it (the same fields, the data in private temporary files); anything else
# (tokens, exec or auth-provider plugins, files, proxies, insecure-skip-tls-verify, a missing or
# damaged entry) goes to kubernetes.config's loader, which also gives the usual errors.

_TOP_KEYS = {"apiVersion", "kind", "clusters", "users", "contexts", "current-context", "preferences"}
_CLUSTER_KEYS = {"server", "certificate-authority-data"}
_USER_KEYS = {"client-certificate-data", "client-key-data"}
_CONTEXT_KEYS = {"cluster", "user", "namespace"}

_TEMP: dict[str, str] = {}  # sha256 of the data -> its file
_TEMP_DIR: list[Path] = []


def _temp_file(data: bytes) -> str:
    """A file holding `data` (a key among them), readable by this user only, removed at exit.
    Written again if it went missing (a notebook kernel outlives a cleaner of /tmp)."""
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    with _PACKAGE_LOCK:
        path = _TEMP.get(digest)
        if path is None or not Path(path).is_file():
            if not _TEMP_DIR or not _TEMP_DIR[0].is_dir():
                import atexit
                import shutil
                import tempfile

                _TEMP_DIR[:] = [Path(tempfile.mkdtemp(prefix="ckalab-kube-"))]  # mode 0700
                atexit.register(shutil.rmtree, _TEMP_DIR[0], True)
            path = str(_TEMP_DIR[0] / digest[:32])
            Path(path).write_bytes(data)
            _TEMP[digest] = path
        return path


def _named(entries, name: str, keys: set[str], what: str) -> dict | None:
    """The `what` (cluster, user, context) called `name` when it is the only one so called and has
    only `keys`, each a string that is not empty."""
    if not isinstance(entries, list):
        return None
    found = [e for e in entries if isinstance(e, dict) and e.get("name") == name]
    if len(found) != 1 or not isinstance(found[0].get(what), dict):
        return None
    body = found[0][what]
    return body if set(body) <= keys and all(isinstance(v, str) and v for v in body.values()) else None


def simple_configuration(path: Path, context: str | None = None):
    """The Configuration for a kubeconfig of ckalab's own shape (above), or None for any other."""
    import base64
    import binascii

    import yaml

    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(doc, dict) or not set(doc) <= _TOP_KEYS:
        return None
    ctx = _named(doc.get("contexts"), context or doc.get("current-context"), _CONTEXT_KEYS, "context")
    if ctx is None or "cluster" not in ctx or "user" not in ctx:
        return None
    cluster = _named(doc.get("clusters"), ctx["cluster"], _CLUSTER_KEYS, "cluster")
    user = _named(doc.get("users"), ctx["user"], _USER_KEYS, "user")
    if cluster is None or user is None or set(cluster) != _CLUSTER_KEYS or set(user) != _USER_KEYS \
            or not cluster["server"].startswith("https://"):
        return None
    try:
        ca, cert, key = (base64.b64decode(v, validate=True) for v in (
            cluster["certificate-authority-data"], user["client-certificate-data"], user["client-key-data"]))
    except (binascii.Error, ValueError):
        return None
    lazy_kubernetes()
    from kubernetes.client.configuration import Configuration

    cfg = Configuration()
    cfg.host = cluster["server"].rstrip("/")
    cfg.ssl_ca_cert, cfg.cert_file, cfg.key_file = _temp_file(ca), _temp_file(cert), _temp_file(key)
    return cfg


def configuration(kubeconfig: str | Path, context: str | None = None):
    """(Configuration, ApiClient or None) for one kubeconfig file, never ~/.kube/config or the
    process default. The ApiClient is there when the official loader made one."""
    path = Path(kubeconfig)
    if not path.exists():
        raise ClusterNotRunning(f"No kubeconfig at {path}: run 'ckalab up' first.")
    cfg = simple_configuration(path, context)
    if cfg is not None:
        return cfg, None
    lazy_kubernetes()
    from kubernetes import config

    api = config.new_client_from_config(config_file=str(path), context=context)
    return api.configuration, api


def _typed():
    """kubernetes.client, whose typed API classes load on first use."""
    lazy_kubernetes()
    from kubernetes import client

    return client


class Kube:
    """Plain-dict reads (get, list, post), typed API groups, a dynamic client for manifests, and
    SubjectAccessReview helpers.

    Checks read plain dicts, so reads go straight to the client's REST layer (its urllib3 pool,
    TLS settings and exceptions) and the ApiClient, whose import brings pydantic and dateutil
    (about half of a cold `ckalab check`), is made only when a typed API, the dynamic client or
    a write asks for it; both share one connection pool."""

    def __init__(self, kubeconfig: str | Path, context: str | None = None, timeout: float = 10.0):
        self.kubeconfig = Path(kubeconfig)
        self.timeout = timeout
        self.configuration, api = configuration(kubeconfig, context)
        if api is not None:
            self.__dict__["api"] = api
        self._kinds: dict[tuple[str, str], tuple[str, bool]] = {}

    @cached_property
    def api(self) -> client.ApiClient:
        """The official ApiClient (typed APIs, dynamic client, writes), on the reads' pool."""
        lazy_kubernetes()
        from kubernetes.client.api_client import ApiClient

        api = ApiClient(configuration=self.configuration)
        if "_rest" in self.__dict__:
            api.rest_client = self.__dict__["_rest"]
        return api

    @cached_property
    def _rest(self):
        if "api" in self.__dict__:
            return self.api.rest_client
        from kubernetes.client.rest import RESTClientObject

        return RESTClientObject(self.configuration)

    def request(self, method: str, path: str, query: dict | None = None, body: dict | None = None,
                timeout: float | None = None) -> dict:
        """One API request as the ApiClient sends it (its headers, its User-Agent, a token from the
        kubeconfig), the answer as a plain dict. A status outside 2xx raises the ApiException
        subclass the typed APIs raise (NotFoundException for 404, ...)."""
        from urllib.parse import urlencode

        from kubernetes.client.exceptions import ApiException

        cfg = self.configuration
        headers = {"Accept": "application/json", "User-Agent": _user_agent()}
        token = cfg.auth_settings().get("BearerToken")
        if token:
            headers[token["key"]] = token["value"]
        if body is not None:
            headers["Content-Type"] = "application/json"
        url = cfg.host + path + (f"?{urlencode(query)}" if query else "")
        resp = self._rest.request(method, url, headers=headers, body=body,
                                  _request_timeout=self.timeout if timeout is None else timeout)
        data = resp.read()
        if not 200 <= resp.status <= 299:
            raise ApiException.from_response(http_resp=resp, body=None, data=None)
        return json.loads(data) if data else {}

    # typed groups -----------------------------------------------------------------------------
    @cached_property
    def core(self) -> client.CoreV1Api:
        return _typed().CoreV1Api(self.api)

    @cached_property
    def apps(self) -> client.AppsV1Api:
        return _typed().AppsV1Api(self.api)

    @cached_property
    def rbac(self) -> client.RbacAuthorizationV1Api:
        return _typed().RbacAuthorizationV1Api(self.api)

    @cached_property
    def certs(self) -> client.CertificatesV1Api:
        return _typed().CertificatesV1Api(self.api)

    @cached_property
    def net(self) -> client.NetworkingV1Api:
        return _typed().NetworkingV1Api(self.api)

    @cached_property
    def authz(self) -> client.AuthorizationV1Api:
        return _typed().AuthorizationV1Api(self.api)

    @cached_property
    def authn(self) -> client.AuthenticationV1Api:
        return _typed().AuthenticationV1Api(self.api)

    @cached_property
    def dynamic(self) -> DynamicClient:
        from kubernetes.dynamic import DynamicClient

        return DynamicClient(self.api)

    # reading ----------------------------------------------------------------------------------
    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """The object as a plain dict, or None when it does not exist."""
        from kubernetes.client.exceptions import NotFoundException

        collection, namespaced = self._collection(api_version, kind, namespace)
        try:
            return self.request("GET", f"{collection}/{_segment(name)}")
        except NotFoundException:
            return None

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[dict]:
        """Every object of `kind` (in `namespace` when given and the kind is namespaced), as
        plain dicts with their apiVersion and kind (a list's items come without them)."""
        collection, _ = self._collection(api_version, kind, namespace)
        # Bounded like every read here: a check must not hang on an API server that stopped answering.
        items = self.request("GET", collection, {"labelSelector": label_selector} if label_selector else None
                             ).get("items") or []
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def _collection(self, api_version: str, kind: str, namespace: str | None) -> tuple[str, bool]:
        """The URL path of `kind`'s collection (in `namespace` when it is namespaced and given) and
        whether it is namespaced, from the API server's discovery (once per group and version)."""
        key = (api_version, kind)
        if key not in self._kinds:
            from kubernetes.client.exceptions import NotFoundException

            base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
            try:
                served = self.request("GET", base).get("resources") or []
            except NotFoundException:
                served = []
            found = [r for r in served if r.get("kind") == kind and "/" not in str(r.get("name", ""))]
            if len(found) != 1:
                raise CkalabError(f"The cluster does not serve {kind} in {api_version}.")
            self._kinds[key] = (f"{base}/{found[0]['name']}", bool(found[0].get("namespaced")))
        path, namespaced = self._kinds[key]
        if namespaced and namespace:
            base, _, plural = path.rpartition("/")
            path = f"{base}/namespaces/{_segment(namespace)}/{plural}"
        return path, namespaced

    def resource(self, api_version: str, kind: str):
        """The dynamic client's resource for `kind` (writes: apply, delete)."""
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return self.dynamic.resources.get(api_version=api_version, kind=kind)
        except ResourceNotFoundError:
            raise CkalabError(f"The cluster does not serve {kind} in {api_version}.") from None

    # writing ----------------------------------------------------------------------------------
    def apply(self, obj: dict, labels: dict[str, str] | None = None) -> dict:
        """Server-side apply one manifest (create or update), adding `labels`."""
        obj = json.loads(json.dumps(obj))  # deep copy; callers keep their data
        if labels:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(labels)
        res = self.resource(obj["apiVersion"], obj["kind"])
        ns = obj["metadata"].get("namespace", "default") if res.namespaced else None
        if ns:
            obj["metadata"]["namespace"] = ns
        out = res.server_side_apply(body=obj, name=obj["metadata"]["name"], namespace=ns,
                                    field_manager=FIELD_MANAGER, force_conflicts=True)
        return out.to_dict()

    def apply_all(self, objs: Iterable[dict], labels: dict[str, str] | None = None) -> list[dict]:
        # Namespaces first so namespaced objects in the same batch have somewhere to go.
        objs = sorted(objs, key=lambda o: o.get("kind") != "Namespace")
        out = [self.apply(o, labels) for o in objs if o.get("kind") == "Namespace"]
        # A new namespace gets its `default` ServiceAccount from the controller manager a moment
        # later, and until then the API server refuses pods there ("error looking up service
        # account"): wait for it before the rest of the batch. Right after the control plane was
        # restored, the controller manager may first have to win its lease back: up to 2 minutes.
        for ns in out:
            name = ns["metadata"]["name"]
            wait_for(lambda: self.get("v1", "ServiceAccount", "default", name), 120,
                     f"the default ServiceAccount of namespace '{name}'")
        return out + [self.apply(o, labels) for o in objs if o.get("kind") != "Namespace"]

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None,
               grace_seconds: int | None = None) -> bool:
        """Delete one object; False when it was already gone (delete is like rm -f). A pod's
        `grace_seconds` replaces its terminationGracePeriodSeconds (kubectl delete --grace-period)."""
        from kubernetes.dynamic.exceptions import NotFoundError

        res = self.resource(api_version, kind)
        # Foreground for the kinds that own pods: the object goes only after its dependents (a
        # Deployment's ReplicaSets and pods), so "deleted" means no leftovers for the next setup
        # or check to trip over. Background for the rest: a Secret or a Role then goes at once,
        # without waiting for the controller manager's garbage collector (slow to come back
        # after the API server restarts, which the control-plane labs do).
        policy = "Foreground" if kind in OWNERS_OF_PODS else "Background"
        body: dict = {"propagationPolicy": policy}
        if grace_seconds is not None:
            body["gracePeriodSeconds"] = grace_seconds
        try:
            res.delete(name=name, namespace=namespace if res.namespaced else None, body=body)
            return True
        except NotFoundError:
            return False

    # authorization ----------------------------------------------------------------------------
    def can(self, user: str, verb: str, resource: str, namespace: str | None = None, *,
            group: str = "", groups: list[str] | None = None, subresource: str | None = None,
            name: str | None = None) -> bool:
        """Ask the API server (SubjectAccessReview) whether `user` may `verb` `resource`."""
        attrs = {k: v for k, v in (("verb", verb), ("resource", resource), ("group", group), ("namespace", namespace),
                                   ("subresource", subresource), ("name", name)) if v is not None}
        spec = {"user": user, "resourceAttributes": attrs}
        if groups is not None:
            spec["groups"] = list(groups)
        review = self.post("/apis/authorization.k8s.io/v1/subjectaccessreviews",
                           {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec})
        return bool((review.get("status") or {}).get("allowed"))

    def whoami(self) -> dict:
        """SelfSubjectReview: who the API server says this client is ({"username", "groups"})."""
        review = self.post("/apis/authentication.k8s.io/v1/selfsubjectreviews",
                           {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        info = (review.get("status") or {}).get("userInfo") or {}
        return {"username": info.get("username"), "groups": list(info.get("groups") or [])}

    def post(self, path: str, body: dict) -> dict:
        """POST `body` to `path`, the answer as a plain dict. Reviews are asked for in bulk by
        graders, and the typed request and answer classes (pydantic models, built on first use)
        were most of a cold check's time in the client."""
        return self.request("POST", path, body=body)

    def exec(self, pod: str, namespace: str, container: str, command: list[str], timeout: float = 5) -> str:
        """`kubectl exec POD -c CONTAINER -- COMMAND`: its stdout and stderr together (clusters
        that offer "exec"; the API server asks the pod's kubelet)."""
        from kubernetes.stream import stream

        return stream(self.core.connect_get_namespaced_pod_exec, pod, namespace, container=container,
                      command=command, stderr=True, stdin=False, stdout=True, tty=False, _request_timeout=timeout)

    def ping(self) -> bool:
        """True when /readyz answers ok."""
        import urllib3
        from kubernetes.client.exceptions import ApiException

        try:
            resp = self._rest.request("GET", f"{self.configuration.host}/readyz", _request_timeout=3)
            return resp.status == 200 and resp.read().strip() == b"ok"
        except (ApiException, urllib3.exceptions.HTTPError, OSError):
            return False


OWNERS_OF_PODS = frozenset({"Deployment", "ReplicaSet", "StatefulSet", "DaemonSet", "Job", "CronJob",
                            "ReplicationController"})


def _segment(name: str) -> str:
    """`name` as one segment of a URL path."""
    from urllib.parse import quote

    return quote(str(name), safe="")


def _user_agent() -> str:
    """The ApiClient's own User-Agent, so audit logs tell ckalab's requests apart the same way
    whichever path made them (classroom.CKALAB_AGENT)."""
    return f"OpenAPI-Generator/{_typed().__version__}/python"


def api_error_text(exc: ApiException) -> str:
    """The API server's own message from an ApiException (its Status.message), or the reason."""
    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)
