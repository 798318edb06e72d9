"""One API client bound to a kubeconfig file, plus the few operations labs and graders share.

Everything here takes an explicit kubeconfig: the learner switches contexts in their own
kubeconfig as part of the tasks, so we never touch the global default configuration.
"""

from __future__ import annotations

import json
import urllib3
from functools import cached_property
from pathlib import Path
from typing import Iterable

from kubernetes import client, config
from kubernetes.client.rest import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from .errors import ClusterNotRunning, CkalabError
from .waiting import wait_for

LAB_LABEL = "ckalab.io/lab"
FIELD_MANAGER = "ckalab"


def api_client(kubeconfig: str | Path, context: str | None = None) -> client.ApiClient:
    """An ApiClient from one kubeconfig file (never ~/.kube/config or the process default)."""
    path = Path(kubeconfig)
    if not path.exists():
        raise ClusterNotRunning(f"No kubeconfig at {path}: run 'ckalab up' first.")
    return config.new_client_from_config(config_file=str(path), context=context)


class Kube:
    """Typed API groups, a dynamic client for manifests, and SubjectAccessReview helpers."""

    def __init__(self, kubeconfig: str | Path, context: str | None = None, timeout: float = 10.0):
        self.kubeconfig = Path(kubeconfig)
        self.api = api_client(kubeconfig, context)
        self.timeout = timeout

    # typed groups -----------------------------------------------------------------------------
    @cached_property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api)

    @cached_property
    def apps(self) -> client.AppsV1Api:
        return client.AppsV1Api(self.api)

    @cached_property
    def rbac(self) -> client.RbacAuthorizationV1Api:
        return client.RbacAuthorizationV1Api(self.api)

    @cached_property
    def certs(self) -> client.CertificatesV1Api:
        return client.CertificatesV1Api(self.api)

    @cached_property
    def net(self) -> client.NetworkingV1Api:
        return client.NetworkingV1Api(self.api)

    @cached_property
    def authz(self) -> client.AuthorizationV1Api:
        return client.AuthorizationV1Api(self.api)

    @cached_property
    def authn(self) -> client.AuthenticationV1Api:
        return client.AuthenticationV1Api(self.api)

    @cached_property
    def dynamic(self) -> DynamicClient:
        return DynamicClient(self.api)

    # reading ----------------------------------------------------------------------------------
    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> dict | None:
        """The object as a plain dict, or None when it does not exist."""
        res = self.resource(api_version, kind)
        try:
            obj = res.get(name=name, namespace=namespace if res.namespaced else None,
                          _request_timeout=self.timeout)
        except NotFoundError:
            return None
        return obj.to_dict()

    def list(self, api_version: str, kind: str, namespace: str | None = None,
             label_selector: str | None = None) -> list[dict]:
        res = self.resource(api_version, kind)
        # Bounded like every read here: a check must not hang on an API server that stopped answering.
        kw = {"_request_timeout": self.timeout}
        if label_selector:
            kw["label_selector"] = label_selector
        if res.namespaced and namespace:
            kw["namespace"] = namespace
        return [i.to_dict() for i in res.get(**kw).items]

    def resource(self, api_version: str, kind: str):
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
        # account"): wait for it before the rest of the batch.
        for ns in out:
            name = ns["metadata"]["name"]
            wait_for(lambda: self.get("v1", "ServiceAccount", "default", name), 60,
                     f"the default ServiceAccount of namespace '{name}'")
        return out + [self.apply(o, labels) for o in objs if o.get("kind") != "Namespace"]

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> bool:
        """Delete one object; False when it was already gone (delete is like rm -f)."""
        res = self.resource(api_version, kind)
        try:
            # Foreground: the object goes only after its dependents (a Deployment's ReplicaSets and
            # pods), so "deleted" means no leftovers for the next setup or check to trip over.
            res.delete(name=name, namespace=namespace if res.namespaced else None,
                       body={"propagationPolicy": "Foreground"})
            return True
        except NotFoundError:
            return False

    # authorization ----------------------------------------------------------------------------
    def can(self, user: str, verb: str, resource: str, namespace: str | None = None, *,
            group: str = "", groups: list[str] | None = None, subresource: str | None = None,
            name: str | None = None) -> bool:
        """Ask the API server (SubjectAccessReview) whether `user` may `verb` `resource`."""
        attrs = client.V1ResourceAttributes(verb=verb, resource=resource, group=group,
                                            namespace=namespace, subresource=subresource, name=name)
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(user=user, groups=groups, resource_attributes=attrs))
        return bool(self.authz.create_subject_access_review(review).status.allowed)

    def whoami(self) -> dict:
        """SelfSubjectReview: who the API server says this client is ({"username", "groups"})."""
        review = self.authn.create_self_subject_review(client.V1SelfSubjectReview(), _request_timeout=self.timeout)
        info = review.status.user_info
        return {"username": info.username, "groups": list(info.groups or [])}

    def ping(self) -> bool:
        """True when /readyz answers ok."""
        try:
            resp = self.api.call_api("GET", f"{self.api.configuration.host}/readyz", _request_timeout=3)
            resp.read()
            return resp.status == 200 and resp.data.strip() == b"ok"
        except (ApiException, urllib3.exceptions.HTTPError, OSError):
            return False


def api_error_text(exc: ApiException) -> str:
    """The API server's own message from an ApiException (its Status.message), or the reason."""
    try:
        return json.loads(exc.body).get("message") or exc.reason
    except (TypeError, ValueError, AttributeError):
        return str(exc.reason)
