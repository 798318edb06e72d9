"""Grader for image-pull-secrets: a docker-registry Secret with the right credentials, used by a
Deployment's pod template and by its current pods.

The Secret is judged the way the kubelet reads it (pkg/credentialprovider): an `auths` key
matches an image when, after adding https:// if there is no scheme and dropping a leading
/v1/ or /v2/, its host equals the image's registry and its path (if any) prefixes the image's
repository; when an entry has `auth`, that base64 "user:password" is what the kubelet uses.
"""

import base64
import binascii
import json
from urllib.parse import urlsplit

from ckalab.grading import check, expect, fail

DOCKERCFGJSON = "kubernetes.io/dockerconfigjson"
KEY = ".dockerconfigjson"


def _secret(kube, lab):
    p = lab.params
    return kube.get("v1", "Secret", p["secret"], p["namespace"])


def _deployment(kube, lab):
    p = lab.params
    return kube.get("apps/v1", "Deployment", p["deployment"], p["namespace"])


def split_image(image: str) -> tuple[str, str]:
    """(registry, repository path) with Docker's rule: the first part is a registry only if it
    has a dot or a colon or is localhost; otherwise the image is on docker.io (library/ for
    single names), so `nginx` is docker.io/library/nginx."""
    name = image.split("@", 1)[0]
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = "docker.io", name if rest else f"library/{name}"
    last = path.rsplit("/", 1)
    if ":" in last[-1]:  # drop the tag
        path = path[: len(path) - len(last[-1]) + last[-1].index(":")]
    return registry, path


def entry_matches(key: str, registry: str, path: str) -> bool:
    """Whether an `auths` key would be used by the kubelet for registry/path."""
    url = key if key.startswith(("https://", "http://")) else f"https://{key}"
    try:
        parts = urlsplit(url)
        host = parts.netloc.lower()
    except ValueError:
        return False
    kpath = parts.path
    if kpath.startswith(("/v1/", "/v2/")):
        kpath = kpath[3:]
    kpath = kpath.strip("/")
    return host == registry.lower() and (not kpath or f"{path}/".startswith(f"{kpath}/"))


def _decode_auth(value) -> tuple[str, str] | None:
    try:
        user, sep, password = base64.b64decode(str(value), validate=True).decode().partition(":")
    except (binascii.Error, ValueError):
        return None
    return (user, password) if sep else None


def entry_problem(key: str, entry, p: dict) -> str | None:
    """Why one matching auths entry would not log in as the expected user (None: it would)."""
    where = f"auths entry '{key}'"
    if not isinstance(entry, dict):
        return f"{where} is {type(entry).__name__}, not an object with username, password and auth."
    user, password = entry.get("username"), entry.get("password")
    if "auth" in entry:
        decoded = _decode_auth(entry["auth"])
        if decoded is None:
            return (f"{where}: the auth field is not base64 of \"username:password\"; the kubelet cannot "
                    "decode it. Build it with: echo -n 'USER:PASSWORD' | base64 -w0")
        if (user is not None and user != decoded[0]) or (password is not None and password != decoded[1]):
            return (f"{where}: the auth field and the username/password fields disagree (the kubelet "
                    "uses auth). Recreate the Secret with kubectl create secret docker-registry.")
        user, password = decoded
    if not user:
        return f"{where} has no username (and no auth field); expected username '{p['username']}'."
    if user != p["username"]:
        return f"{where}: username is '{user}'; expected '{p['username']}'."
    if password != p["password"]:
        field = "the password" if entry.get("password") is not None else "the password inside the auth field"
        return f"{where}: {field} does not match the one in the task."
    if "email" in entry and entry["email"] != p["email"]:
        return f"{where}: email is '{entry['email']}'; expected '{p['email']}'."
    return None


@check(1, "Secret exists", hint="kubectl get secret -n NAMESPACE")
def test_secret_exists(kube, lab):
    p = lab.params
    expect(_secret(kube, lab), f"Secret '{p['secret']}' not found in namespace '{p['namespace']}'. Create it: "
           f"kubectl create secret docker-registry {p['secret']} --docker-server={p['server']} ... -n {p['namespace']}")


@check(2, "Secret has type kubernetes.io/dockerconfigjson", after="test_secret_exists",
       hint="kubectl get secret NAME -o jsonpath='{.type}'")
def test_secret_type(kube, lab):
    p = lab.params
    kind = _secret(kube, lab).get("type") or "Opaque"
    legacy = kind == "kubernetes.io/dockercfg"
    why = ("that is the legacy .dockercfg format; the task asks for the current one" if legacy
           else f"the kubelet only uses {DOCKERCFGJSON} (or the legacy kubernetes.io/dockercfg) Secrets to pull images")
    expect(kind == DOCKERCFGJSON,
           f"Secret '{p['secret']}' has type '{kind}'; {why}, and a Secret's type cannot be changed. Delete it "
           f"and create it with: kubectl create secret docker-registry {p['secret']} --docker-server={p['server']} "
           f"--docker-username=... --docker-password=... --docker-email=... -n {p['namespace']}")


@check(4, "Secret holds the registry credentials", after="test_secret_type",
       hint="kubectl get secret NAME -o jsonpath='{.data.\\.dockerconfigjson}' | base64 -d")
def test_secret_credentials(kube, lab):
    p = lab.params
    name = f"Secret '{p['secret']}'"
    raw = (_secret(kube, lab).get("data") or {}).get(KEY)
    expect(raw, f"{name} has no '{KEY}' key. Recreate it with kubectl create secret docker-registry.")
    try:
        config = json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        fail(f"{name}: '{KEY}' is not base64-encoded JSON. Under data: the value must be the base64 of a "
             "JSON document like {\"auths\": {...}}; under stringData: give the JSON itself.")
    example = "{\"auths\": {\"" + p["server"] + "\": {\"username\": ..., \"password\": ..., \"auth\": ...}}}"
    if not isinstance(config, dict):
        fail(f"{name}: '{KEY}' is JSON but not an object; expected {example}.")
    if not isinstance(config.get("auths"), dict):
        legacy = " (a flat map of servers is the legacy .dockercfg format)" if "auths" not in config else ""
        fail(f"{name}: '{KEY}' has no 'auths' object{legacy}; expected {example}.")
    auths = config["auths"]
    registry, path = p["server"], p["repository"]
    matching = sorted(k for k in auths if entry_matches(k, registry, path))
    if not matching:
        fail(f"{name}: no auths entry is for the registry '{registry}' (found: "
             f"{', '.join(repr(k) for k in auths) or 'none'}). Use --docker-server={registry}.")
    problems = [entry_problem(k, auths[k], p) for k in matching]
    expect(None in problems, f"{name}: {problems[0]}")


@check(3, "Deployment's pod template uses the pull secret", hint="kubectl get deployment NAME -o yaml")
def test_deployment_uses_secret(kube, lab):
    p = lab.params
    dep = _deployment(kube, lab)
    expect(dep, f"Deployment '{p['deployment']}' not found in namespace '{p['namespace']}' (the lab created it). "
           f"Restore it with: ckalab reset image-pull-secrets")
    spec = dep["spec"]["template"]["spec"]
    names = [s.get("name") for s in spec.get("imagePullSecrets") or []]
    expect(p["secret"] in names,
           f"Deployment '{p['deployment']}': the pod template's imagePullSecrets is "
           f"{names or 'empty'}; expected it to list '{p['secret']}' (spec.template.spec.imagePullSecrets). "
           f"Look: kubectl get deployment {p['deployment']} -n {p['namespace']} "
           "-o jsonpath='{.spec.template.spec.imagePullSecrets}'")
    images = [c["image"] for c in spec["containers"]]
    elsewhere = [i for i in images if split_image(i)[0].lower() != p["server"].lower()]
    expect(not elsewhere, f"Deployment '{p['deployment']}' now uses {elsewhere}, which is not from '{p['server']}' "
           f"(a name without a registry host means docker.io). Keep the image {p['server']}/{p['repository']}.")


@check(2, "the Deployment's current pods carry the pull secret", after="test_deployment_uses_secret",
       hint="kubectl rollout status deployment NAME; kubectl get pods -o jsonpath='{..imagePullSecrets}'")
def test_pods_carry_secret(kube, lab):
    p = lab.params
    dep = _deployment(kube, lab)
    # Only pods of this Deployment's ReplicaSets: not pods of a deleted one still being garbage
    # collected, nor other pods that happen to share the label.
    sets = {rs["metadata"]["name"] for rs in kube.list("apps/v1", "ReplicaSet", p["namespace"])
            if any(o.get("uid") == dep["metadata"]["uid"] for o in rs["metadata"].get("ownerReferences") or [])}
    selector = ",".join(f"{k}={v}" for k, v in (dep["spec"]["selector"].get("matchLabels") or {}).items())
    live = [q for q in kube.list("v1", "Pod", p["namespace"], selector or None)
            if not q["metadata"].get("deletionTimestamp")
            and any(o.get("kind") == "ReplicaSet" and o.get("name") in sets
                    for o in q["metadata"].get("ownerReferences") or [])]
    expect(live, f"Deployment '{p['deployment']}' has no pods. Look: kubectl get deployment {p['deployment']} "
           f"-n {p['namespace']}")
    old = sorted(q["metadata"]["name"] for q in live
                 if p["secret"] not in [s.get("name") for s in q["spec"].get("imagePullSecrets") or []])
    expect(not old, f"{len(old)} of {len(live)} pods of Deployment '{p['deployment']}' have no imagePullSecrets "
           f"'{p['secret']}' ({', '.join(old)}): they were created before the change. Wait for the rollout "
           f"(kubectl rollout status deployment {p['deployment']} -n {p['namespace']}); pods are never updated "
           "in place.")
