"""Grader for image-pull-secrets: a docker-registry Secret with the right credentials, which the
Deployment's current pods carry, for the task's image.

The Secret is judged the way the kubelet reads it (pkg/credentialprovider): an `auths` key
matches an image when, after adding https:// if there is no scheme and dropping a leading
/v1/ or /v2/, its host equals the image's registry and its path (if any) prefixes the image's
repository; when an entry has `auth`, that base64 "user:password" is what the kubelet uses.

Two correct routes get the secret into the pods, and both pass: the pod template lists it
(spec.template.spec.imagePullSecrets), or the template lists no pull secrets and its
ServiceAccount (`default` when unset) does: the ServiceAccount admission plugin copies the
account's imagePullSecrets into every pod created without any of its own. Either way what
counts in the end is the pods: they get the secret only when they are created.
"""

import base64
import binascii
import json
from urllib.parse import urlsplit

from ckalab.grading import check, expect, fail, fixture, skip
from ckalab.waiting import WaitTimeout, wait_for

DOCKERCFGJSON = "kubernetes.io/dockerconfigjson"
KEY = ".dockerconfigjson"


def _secret(kube, lab):
    p = lab.params
    return kube.get("v1", "Secret", p["secret"], p["namespace"])


def _deployment(kube, lab):
    p = lab.params
    return kube.get("apps/v1", "Deployment", p["deployment"], p["namespace"])


def parse_image(image: str) -> tuple[str, str, str, str]:
    """(registry, repository path, tag, digest), normalised as the container runtime reads a
    reference: the first part is a registry only if it has a dot or a colon or is localhost;
    otherwise the image is on docker.io (library/ for single names), so `nginx` is
    docker.io/library/nginx:latest. No tag and no digest means the tag `latest`."""
    name, _, digest = image.strip().partition("@")
    first, _, rest = name.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first.lower(), rest
    else:
        registry, path = "docker.io", name if rest else f"library/{name}"
    if registry in ("index.docker.io", "registry-1.docker.io"):
        registry = "docker.io"
    tag = ""
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        tag = last.split(":", 1)[1]
        path = path[: len(path) - len(last) + last.index(":")]
    if registry == "docker.io" and "/" not in path:
        path = f"library/{path}"
    return registry, path, tag or ("" if digest else "latest"), digest


def image_problem(image: str, p: dict) -> str | None:
    """How `image` differs from the task's image (None: it is the same reference)."""
    want, got = parse_image(f"{p['server']}/{p['repository']}"), parse_image(image)
    if got == want:
        return None
    parts = ("registry", "repository", "tag", "digest")
    diff = [f"{what} {g or 'none'}, not {w or 'none'}" for what, g, w in zip(parts, got, want) if g != w]
    return f"'{image}' is {_reference(got)} ({'; '.join(diff)})"


def _reference(parts: tuple[str, str, str, str]) -> str:
    registry, path, tag, digest = parts
    return f"{registry}/{path}" + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


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
            return (f"{where}: the auth field is not base64 of \"username:password\", so the kubelet cannot "
                    "decode it.")
        if (user is not None and user != decoded[0]) or (password is not None and password != decoded[1]):
            return (f"{where}: the auth field and the username/password fields disagree; the kubelet "
                    "logs in with auth.")
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


LOOK_CONFIG = "kubectl get secret {secret} -n {namespace} -o jsonpath='{{.data.\\.dockerconfigjson}}' | base64 -d"


@check(1, "Secret exists", hint="kubectl get secret -n NAMESPACE")
def test_secret_exists(kube, lab):
    p = lab.params
    expect(_secret(kube, lab), f"Secret '{p['secret']}' not found in namespace '{p['namespace']}' "
           f"(kubectl get secrets -n {p['namespace']}).")


@check(2, "Secret has type kubernetes.io/dockerconfigjson", after="test_secret_exists",
       hint="kubectl get secret NAME -o jsonpath='{.type}'")
def test_secret_type(kube, lab):
    p = lab.params
    kind = _secret(kube, lab).get("type") or "Opaque"
    legacy = kind == "kubernetes.io/dockercfg"
    why = ("that is the legacy .dockercfg format; the task asks for the current one" if legacy
           else f"the kubelet only uses {DOCKERCFGJSON} (or the legacy kubernetes.io/dockercfg) Secrets to pull images")
    expect(kind == DOCKERCFGJSON,
           f"Secret '{p['secret']}' has type '{kind}'; {why}. A Secret's type cannot be changed once it is created. "
           f"Look: kubectl get secret {p['secret']} -n {p['namespace']} -o jsonpath='{{.type}}'")


@check(4, "Secret holds the registry credentials", after="test_secret_type",
       hint="kubectl get secret NAME -o jsonpath='{.data.\\.dockerconfigjson}' | base64 -d")
def test_secret_credentials(kube, lab):
    p = lab.params
    name = f"Secret '{p['secret']}'"
    look = "Look: " + LOOK_CONFIG.format(**p)
    raw = (_secret(kube, lab).get("data") or {}).get(KEY)
    expect(raw, f"{name} has no '{KEY}' key (kubectl describe secret {p['secret']} -n {p['namespace']} lists its "
           "keys).")
    try:
        config = json.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        fail(f"{name}: '{KEY}' is not base64-encoded JSON. Under data: the value must be the base64 of a "
             "JSON document like {\"auths\": {...}}; under stringData: the JSON itself.")
    example = "{\"auths\": {\"" + p["server"] + "\": {\"username\": ..., \"password\": ..., \"auth\": ...}}}"
    if not isinstance(config, dict):
        fail(f"{name}: '{KEY}' is JSON but not an object; expected {example}. {look}")
    if not isinstance(config.get("auths"), dict):
        legacy = " (a flat map of servers is the legacy .dockercfg format)" if "auths" not in config else ""
        fail(f"{name}: '{KEY}' has no 'auths' object{legacy}; expected {example}.")
    auths = config["auths"]
    registry, path = p["server"], p["repository"]
    matching = sorted(k for k in auths if entry_matches(k, registry, path))
    if not matching:
        fail(f"{name}: no auths entry applies to the image {registry}/{path} (found: "
             f"{', '.join(repr(k) for k in auths) or 'none'}), so the kubelet would pull without credentials. "
             f"{look}")
    problems = [entry_problem(k, auths[k], p) for k in matching]
    expect(None in problems, f"{name}: {problems[0]}")


def _names(refs) -> list:
    return [r.get("name") for r in refs or [] if isinstance(r, dict)]


def pull_secret_problem(kube, p: dict, template: dict) -> str | None:
    """Why pods created from this template would not get the secret (None: they would)."""
    dep, ns, secret = p["deployment"], p["namespace"], p["secret"]
    own = _names(template.get("imagePullSecrets"))
    if secret in own:
        return None
    look = (f"Look: kubectl get deployment {dep} -n {ns} -o jsonpath='{{.spec.template.spec.imagePullSecrets}}'")
    if own:
        return (f"Deployment '{dep}': the pod template's imagePullSecrets is {own}, without '{secret}'. While a "
                "pod lists pull secrets of its own, its ServiceAccount's imagePullSecrets are not added to it. "
                f"{look}")
    # The deprecated spec.serviceAccount is an alias the API server keeps in step with serviceAccountName.
    sa_name = template.get("serviceAccountName") or template.get("serviceAccount") or "default"
    sa = kube.get("v1", "ServiceAccount", sa_name, ns)
    look_sa = f"kubectl get serviceaccount {sa_name} -n {ns} -o yaml"
    if sa is None:
        return (f"Deployment '{dep}': the pod template lists no imagePullSecrets and names ServiceAccount "
                f"'{sa_name}', which does not exist in namespace '{ns}' (kubectl get serviceaccounts -n {ns}).")
    theirs = _names(sa.get("imagePullSecrets"))
    if secret in theirs:
        return None
    return (f"Deployment '{dep}': neither the pod template's imagePullSecrets (empty) nor those of its "
            f"ServiceAccount '{sa_name}' ({theirs or 'empty'}) list '{secret}', so its pods are created without "
            f"it. {look}; {look_sa}")


@check(3, "Deployment's pods are set up to get the pull secret, for the task's image",
       hint="kubectl get deployment NAME -o yaml; kubectl get serviceaccount -o yaml")
def test_deployment_uses_secret(kube, lab):
    p = lab.params
    dep = _deployment(kube, lab)
    expect(dep, f"Deployment '{p['deployment']}' not found in namespace '{p['namespace']}' "
           f"(kubectl get deployments -n {p['namespace']}); the lab created it, and ckalab reset image-pull-secrets "
           "sets it up again.")
    template = dep["spec"]["template"]["spec"]
    problem = pull_secret_problem(kube, p, template)
    expect(not problem, problem)
    wrong = [m for c in template["containers"] if (m := image_problem(c.get("image") or "", p))]
    expect(not wrong, f"Deployment '{p['deployment']}': image {'; '.join(wrong)}. The task's image is "
           f"{_reference(parse_image(p['server'] + '/' + p['repository']))}, the one the secret is for. "
           f"Look: kubectl get deployment {p['deployment']} -n {p['namespace']} "
           "-o jsonpath='{.spec.template.spec.containers[*].image}'")


def _live_pods(kube, p: dict, dep: dict | None) -> tuple[list[dict], str]:
    """The Deployment's pods that are not being deleted, and its label selector. Only pods of its
    own ReplicaSets: not pods of a deleted one still being garbage collected, nor other pods that
    happen to share the label."""
    if dep is None:
        return [], ""
    sets = {rs["metadata"]["name"] for rs in kube.list("apps/v1", "ReplicaSet", p["namespace"])
            if any(o.get("uid") == dep["metadata"]["uid"] for o in rs["metadata"].get("ownerReferences") or [])}
    labels = dep["spec"]["selector"].get("matchLabels") or {}
    selector = ",".join(f"{k}={v}" for k, v in labels.items())
    live = [q for q in kube.list("v1", "Pod", p["namespace"], selector or None)
            if not q["metadata"].get("deletionTimestamp")
            and any(o.get("kind") == "ReplicaSet" and o.get("name") in sets
                    for o in q["metadata"].get("ownerReferences") or [])]
    return live, selector


@check(2, "the Deployment's current pods carry the pull secret", after="test_deployment_uses_secret",
       hint="kubectl get pods -l app=NAME -o custom-columns=NAME:.metadata.name,PULL:.spec.imagePullSecrets[*].name")
def test_pods_carry_secret(kube, lab):
    p = lab.params
    live, selector = _live_pods(kube, p, _deployment(kube, lab))
    look = (f"kubectl get pods -n {p['namespace']}" + (f" -l {selector}" if selector else "")
            + " -o custom-columns=NAME:.metadata.name,PULL:.spec.imagePullSecrets[*].name")
    expect(live, f"Deployment '{p['deployment']}' has no pods (kubectl get deployment {p['deployment']} "
           f"-n {p['namespace']}; kubectl describe replicasets -n {p['namespace']} shows why none are created).")
    old = sorted(q["metadata"]["name"] for q in live if p["secret"] not in _names(q["spec"].get("imagePullSecrets")))
    expect(not old, f"{len(old)} of {len(live)} pods of Deployment '{p['deployment']}' have no imagePullSecrets "
           f"'{p['secret']}' ({', '.join(old)}): they were created before the pull secret was set up. A pod gets "
           f"its pull secrets only when it is created, from its template or its ServiceAccount; existing pods never "
           f"change. Look: {look}")


# --- the real pull (clusters with a private registry: real nodes) ------------------------------

@fixture
def private_registry(cluster):
    """Skips the check (not scored) where the nodes pull from no registry that checks logins."""
    if not cluster.offers("private-registry"):
        skip(f"the {cluster.backend} backend has no private registry that checks the login")


PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff")


def _pull_state(pod: dict) -> tuple[str, str]:
    """('running' | 'failed' | 'waiting', what the kubelet says) for the pod's first container."""
    for c in (pod.get("status") or {}).get("containerStatuses") or []:
        state = c.get("state") or {}
        if "running" in state:
            return "running", ""
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in PULL_FAILURES:
            return "failed", f"{waiting['reason']}: {waiting.get('message', '')}"
        return "waiting", waiting.get("reason", "")
    return "waiting", "no container started yet"


@check(3, "the pods really pull the image with the secret and run",
       hint="kubectl get pods -l app=NAME; kubectl describe pod POD (its Events say why a pull failed)")
def test_pods_pull_the_image(kube, lab, private_registry):
    p = lab.params
    dep = _deployment(kube, lab)
    expect(dep and not pull_secret_problem(kube, p, dep["spec"]["template"]["spec"]),
           "Not checked yet: first fix \"Deployment's pods are set up to get the pull secret, for the task's image\".")
    live, _ = _live_pods(kube, p, dep)
    expect(all(p["secret"] in _names(q["spec"].get("imagePullSecrets")) for q in live),
           "Not checked yet: first fix \"the Deployment's current pods carry the pull secret\".")
    got: dict = {}

    def settled():  # every pod runs, or one failed to pull with the pods' current secret
        live, _ = _live_pods(kube, p, _deployment(kube, lab))
        got["states"] = {q["metadata"]["name"]: _pull_state(q) for q in live}
        states = [s for s, _ in got["states"].values()]
        return bool(states) and (all(s == "running" for s in states) or "failed" in states)
    try:
        wait_for(settled, 40, "the Deployment's pods to pull their image")
    except WaitTimeout:
        pass
    states = got.get("states") or {}
    failed = {n: why for n, (s, why) in states.items() if s == "failed"}
    if failed:
        name, why = sorted(failed.items())[0]
        fail(f"Pod '{name}' of Deployment '{p['deployment']}' could not pull its image: {why[:300]}. The registry "
             f"{p['server']} refused the pull: look at the credentials in Secret '{p['secret']}' (kubectl get "
             f"secret {p['secret']} -n {p['namespace']} -o jsonpath='{{.data.\\.dockerconfigjson}}' | base64 -d) "
             f"and at the pod's events (kubectl describe pod {name} -n {p['namespace']}). A pod in back-off tries "
             "again with the Secret's current contents only when its back-off ends.")
    waiting = sorted(f"{n} ({why or 'starting'})" for n, (s, why) in states.items() if s != "running")
    expect(states and not waiting, f"Pods of Deployment '{p['deployment']}' are not running yet: "
           f"{', '.join(waiting) or 'none exist'}. Look: kubectl get pods -n {p['namespace']}; kubectl describe pod POD")
