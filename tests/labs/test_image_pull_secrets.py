"""image-pull-secrets grader: the reference and other correct forms pass; wrong Secrets, wrong
placements and stale pods fail with pinned messages."""

import base64
import importlib.util
import json

from conftest import check_of, failed_ids, scored_ids

from ckalab import labs
from ckalab.waiting import wait_for

LAB = "image-pull-secrets"
PULL = "test_pods_pull_the_image"
SERVER, USER, PASSWORD, EMAIL = "private-registry.io", "registry-user", "registry-password", "registry-user@org.com"
LOOK_CONFIG = "Look: kubectl get secret regcred -n default -o jsonpath='{.data.\\.dockerconfigjson}' | base64 -d"
LOOK_PODS = ("Look: kubectl get pods -n default -l app=web -o "
             "custom-columns=NAME:.metadata.name,PULL:.spec.imagePullSecrets[*].name")
LOOK_IMAGE = "Look: kubectl get deployment web -n default -o jsonpath='{.spec.template.spec.containers[*].image}'"


def rollout(h):
    """Wait (bounded, no sleep) until the Deployment has replaced its pods."""
    h.kubectl("rollout", "status", f"deployment/{h.params['deployment']}", "-n", h.params["namespace"],
              "--timeout=60s")


def patch_deployment(h, secret="regcred"):
    body = {"spec": {"template": {"spec": {"imagePullSecrets": [{"name": secret}]}}}}
    h.kubectl("patch", "deployment", "web", "-n", "default", "-p", json.dumps(body))


def docker_secret(h, *extra, password=PASSWORD, server=SERVER):
    h.kubectl("create", "secret", "docker-registry", "regcred", "-n", "default", f"--docker-username={USER}",
              f"--docker-password={password}", f"--docker-email={EMAIL}", *extra,
              *([f"--docker-server={server}"] if server else []))


def config_secret(h, config, type_="kubernetes.io/dockerconfigjson"):
    """A Secret written as YAML by hand, with the .dockerconfigjson given as stringData."""
    h.apply(f"""
apiVersion: v1
kind: Secret
metadata: {{name: regcred, namespace: default}}
type: {type_}
stringData:
  .dockerconfigjson: '{json.dumps(config)}'
""")


def b64(text):
    return base64.b64encode(text.encode()).decode()


def test_fresh_start_fails_naming_unfinished_checks(lab_harness):
    h = lab_harness(LAB)
    r = h.grade()
    assert not r.passed and r.score == 0
    # Without a private registry (kwok nodes) the real pull is not checked, and not scored.
    assert [c.id for c in r.unavailable()] == ([] if h.cluster.offers("private-registry") else [PULL])
    assert failed_ids(r) == scored_ids(r)
    assert check_of(r, "test_secret_exists").message == (
        "Secret 'regcred' not found in namespace 'default' (kubectl get secrets -n default).")
    assert check_of(r, "test_secret_credentials").message == (
        'Not checked yet: first fix "Secret has type kubernetes.io/dockerconfigjson".')
    assert check_of(r, "test_deployment_uses_secret").message == (
        "Deployment 'web': neither the pod template's imagePullSecrets (empty) nor those of its ServiceAccount "
        "'default' (empty) list 'regcred', so its pods are created without it. Look: kubectl get deployment web -n "
        "default -o jsonpath='{.spec.template.spec.imagePullSecrets}'; kubectl get serviceaccount default -n "
        "default -o yaml")


def test_reference_solution_passes(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    rollout(h)
    r = h.grade()
    assert r.passed, r.render()
    assert r.score == r.max_score == 12


def test_seeded_variant_solution_passes(lab_harness):
    h = lab_harness(LAB, seed="42")
    h.solve()
    rollout(h)
    assert h.grade().passed  # its objects carry the lab label: the next reset removes them


def test_yaml_without_auth_field_and_kubectl_edit_pass(lab_harness):
    """Hand-built .dockerconfigjson (no auth field, URL-style key as `docker login` writes it),
    and the Deployment changed with kubectl edit instead of patch."""
    h = lab_harness(LAB)
    config_secret(h, {"auths": {f"https://{SERVER}/v1/": {"username": USER, "password": PASSWORD, "email": EMAIL}}})
    h.write("editor.py", "import sys, yaml\n"
            "d = yaml.safe_load(open(sys.argv[1]))\n"
            "d['spec']['template']['spec']['imagePullSecrets'] = [{'name': 'regcred'}]\n"
            "yaml.safe_dump(d, open(sys.argv[1], 'w'))\n")
    h.sh("KUBE_EDITOR=\"python $PWD/editor.py\" kubectl edit deployment web -n default")
    rollout(h)
    r = h.grade()
    assert r.passed, r.render()


def test_opaque_secret_fails_on_type(lab_harness):
    h = lab_harness(LAB)
    h.write("config.json", json.dumps({"auths": {SERVER: {"username": USER, "password": PASSWORD}}}))
    h.kubectl("create", "secret", "generic", "regcred", "-n", "default", "--from-file=.dockerconfigjson=config.json")
    patch_deployment(h)
    rollout(h)
    r = h.grade()
    assert failed_ids(r) == {"test_secret_type", "test_secret_credentials"}
    assert check_of(r, "test_secret_type").message == (
        "Secret 'regcred' has type 'Opaque'; the kubelet only uses kubernetes.io/dockerconfigjson (or the legacy "
        "kubernetes.io/dockercfg) Secrets to pull images. A Secret's type cannot be changed once it is created. "
        "Look: kubectl get secret regcred -n default -o jsonpath='{.type}'")


def test_wrong_password_fails_without_revealing_it(lab_harness):
    h = lab_harness(LAB)
    docker_secret(h, password="registry-pasword")
    patch_deployment(h)
    rollout(h)
    r = h.grade()
    assert failed_ids(r) == {"test_secret_credentials"}
    msg = check_of(r, "test_secret_credentials").message
    assert msg == ("Secret 'regcred': auths entry 'private-registry.io': the password does not match the one in "
                   "the task.")
    assert "registry-pasword" not in msg and PASSWORD not in msg


def test_missing_docker_server_fails(lab_harness):
    """Without --docker-server kubectl writes Docker Hub's address: the credentials go to the wrong registry."""
    h = lab_harness(LAB)
    docker_secret(h, server=None)
    patch_deployment(h)
    rollout(h)
    r = h.grade()
    assert failed_ids(r) == {"test_secret_credentials"}
    assert check_of(r, "test_secret_credentials").message == (
        "Secret 'regcred': no auths entry applies to the image private-registry.io/apps/internal-app (found: "
        "'https://index.docker.io/v1/'), so the kubelet would pull without credentials. " + LOOK_CONFIG)


def test_auth_field_disagreeing_with_username_fails(lab_harness):
    h = lab_harness(LAB)
    config_secret(h, {"auths": {SERVER: {"username": USER, "password": PASSWORD,
                                         "auth": b64(f"someone-else:{PASSWORD}")}}})
    patch_deployment(h)
    rollout(h)
    r = h.grade()
    assert check_of(r, "test_secret_credentials").message == (
        "Secret 'regcred': auths entry 'private-registry.io': the auth field and the username/password fields "
        "disagree; the kubelet logs in with auth.")


def test_wrong_username_fails(lab_harness):
    h = lab_harness(LAB)
    config_secret(h, {"auths": {SERVER: {"username": "registry_user", "password": PASSWORD}}})
    r = h.grade()
    assert check_of(r, "test_secret_credentials").message == (
        "Secret 'regcred': auths entry 'private-registry.io': username is 'registry_user'; expected 'registry-user'.")


def test_legacy_flat_config_fails_with_message(lab_harness):
    h = lab_harness(LAB)
    config_secret(h, {SERVER: {"username": USER, "password": PASSWORD}})
    r = h.grade()
    assert check_of(r, "test_secret_credentials").message == (
        "Secret 'regcred': '.dockerconfigjson' has no 'auths' object (a flat map of servers is the legacy "
        ".dockercfg format); expected {\"auths\": {\"private-registry.io\": {\"username\": ..., \"password\": ..., "
        "\"auth\": ...}}}.")


def test_auth_field_not_base64_fails_with_message(lab_harness):
    h = lab_harness(LAB)
    config_secret(h, {"auths": {SERVER: {"auth": f"{USER}:{PASSWORD}"}}})
    r = h.grade()
    assert check_of(r, "test_secret_credentials").message == (
        "Secret 'regcred': auths entry 'private-registry.io': the auth field is not base64 of \"username:password\", "
        "so the kubelet cannot decode it.")


def test_non_json_config_is_refused_by_the_api_server(lab_harness):
    """The API server validates dockerconfigjson Secrets, so garbage never reaches the grader as
    that type; as an Opaque Secret it is caught by the type check."""
    h = lab_harness(LAB)
    refused = h.kubectl("create", "secret", "generic", "regcred", "-n", "default",
                        "--type=kubernetes.io/dockerconfigjson", "--from-literal=.dockerconfigjson=not json",
                        check=False)
    assert refused.returncode != 0 and "Invalid value" in refused.stderr
    h.write("garbage.bin", bytes(range(256)))
    h.kubectl("create", "secret", "generic", "regcred", "-n", "default", "--from-file=.dockerconfigjson=garbage.bin")
    r = h.grade()
    assert check_of(r, "test_secret_type").message.startswith("Secret 'regcred' has type 'Opaque';")
    assert check_of(r, "test_secret_credentials").message == (
        'Not checked yet: first fix "Secret has type kubernetes.io/dockerconfigjson".')


def test_pods_created_before_the_change_fail(lab_harness):
    """A paused Deployment keeps its old pods: the template is right, the running pods are not."""
    h = lab_harness(LAB)
    docker_secret(h)
    h.kubectl("rollout", "pause", "deployment/web", "-n", "default")
    patch_deployment(h)
    old = wait_for(lambda: sorted(p["metadata"]["name"] for p in h.kube.list("v1", "Pod", "default", "app=web")
                                  if not p["metadata"].get("deletionTimestamp")), 30, "the Deployment's two pods")
    assert len(old) == 2
    r = h.grade()
    assert failed_ids(r) == {"test_pods_carry_secret"}
    assert check_of(r, "test_pods_carry_secret").message == (
        f"2 of 2 pods of Deployment 'web' have no imagePullSecrets 'regcred' ({', '.join(old)}): they were "
        "created before the pull secret was set up. A pod gets its pull secrets only when it is created, from its "
        "template or its ServiceAccount; existing pods never change. " + LOOK_PODS)
    h.kubectl("rollout", "resume", "deployment/web", "-n", "default")
    rollout(h)
    assert h.grade().passed


def test_secret_name_as_container_field_is_rejected_and_graded(lab_harness):
    """imagePullSecrets under the container is not a field: a patch only warns and the API server
    drops it ("patched (no change)"), so the template stays empty and the grader says so."""
    h = lab_harness(LAB)
    docker_secret(h)
    bad = h.kubectl("patch", "deployment", "web", "-n", "default", "--type=json", "-p",
                    '[{"op":"add","path":"/spec/template/spec/containers/0/imagePullSecrets",'
                    '"value":[{"name":"regcred"}]}]', check=False)
    assert 'unknown field "spec.template.spec.containers[0].imagePullSecrets"' in bad.stderr, bad.stderr
    assert check_of(h.grade(), "test_deployment_uses_secret").message.startswith(
        "Deployment 'web': neither the pod template's imagePullSecrets (empty)")


def test_start_twice_equals_once(lab_harness):
    h = lab_harness(LAB)

    def state():
        dep = h.kube.get("apps/v1", "Deployment", "web", "default")
        pods = sorted(p["metadata"]["name"] for p in h.kube.list("v1", "Pod", "default", "app=web"))
        return dep["metadata"]["generation"], dep["metadata"]["labels"], dep["spec"]["template"], pods

    before = state()
    h.start()
    assert state() == before
    assert before[1]["ckalab.io/lab"] == LAB


def grader_module():
    spec = importlib.util.spec_from_file_location("image_pull_secrets_grader", labs.load(LAB).grader)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_image_references_are_normalised():
    parse = grader_module().parse_image
    assert parse("nginx") == parse("docker.io/library/nginx:latest") == parse("index.docker.io/nginx") == (
        "docker.io", "library/nginx", "latest", "")
    assert parse("bitnami/redis:7.2") == ("docker.io", "bitnami/redis", "7.2", "")
    assert parse("Registry.Example.net:5000/team/app:1.4") == ("registry.example.net:5000", "team/app", "1.4", "")
    assert parse("localhost/app@sha256:abc") == ("localhost", "app", "", "sha256:abc")
    assert parse("private-registry.io/apps/internal-app") == parse("private-registry.io/apps/internal-app:latest")


def test_image_other_than_the_tasks_fails(lab_harness):
    """Dropping the registry host sends the pull to Docker Hub, where the secret does not apply;
    another repository or tag on the same host would even get the credentials: all are not the
    task's image. Case in a host name and an explicit :latest change nothing."""
    h = lab_harness(LAB)
    docker_secret(h)
    patch_deployment(h)

    def message(image):
        h.kubectl("set", "image", "deployment/web", f"app={image}", "-n", "default")
        r = h.grade()
        assert failed_ids(r) == {"test_deployment_uses_secret", "test_pods_carry_secret"}
        return check_of(r, "test_deployment_uses_secret").message

    assert message("apps/internal-app") == (
        "Deployment 'web': image 'apps/internal-app' is docker.io/apps/internal-app:latest (registry docker.io, not "
        "private-registry.io). The task's image is private-registry.io/apps/internal-app:latest, the one the secret "
        "is for. " + LOOK_IMAGE)
    assert message("private-registry.io/apps/other-app").startswith(
        "Deployment 'web': image 'private-registry.io/apps/other-app' is private-registry.io/apps/other-app:latest "
        "(repository apps/other-app, not apps/internal-app).")
    assert "(tag v2, not latest)" in message("private-registry.io/apps/internal-app:v2")
    h.kubectl("set", "image", "deployment/web", "app=PRIVATE-REGISTRY.IO/apps/internal-app:latest", "-n", "default")
    rollout(h)
    assert h.grade().passed


def test_default_service_account_route_passes_and_reset_undoes_it(lab_harness):
    """The secret attached to the namespace's default ServiceAccount: pods created after that get
    it from the admission plugin. Until they are replaced, the pod check says why it fails; after
    a reset the lab is fresh again (the dangling reference is removed, the pods are clean)."""
    h = lab_harness(LAB)
    docker_secret(h)
    h.kubectl("patch", "serviceaccount", "default", "-n", "default", "-p",
              json.dumps({"imagePullSecrets": [{"name": "regcred"}]}))
    r = h.grade()
    assert failed_ids(r) == {"test_pods_carry_secret"}
    assert "they were created before the pull secret was set up" in check_of(r, "test_pods_carry_secret").message
    h.kubectl("rollout", "restart", "deployment/web", "-n", "default")
    rollout(h)
    r = h.grade()
    assert r.passed, r.render()
    h.reset()
    assert not h.kube.get("v1", "ServiceAccount", "default", "default").get("imagePullSecrets")
    pods = h.kube.list("v1", "Pod", "default", "app=web")
    assert len(pods) == 2 and not any(q["spec"].get("imagePullSecrets") for q in pods)
    assert failed_ids(h.grade()) == scored_ids(r)


def test_reset_keeps_other_service_account_pull_secrets(lab_harness):
    """Reset takes out only a reference to the lab's secret name, nothing else of the account."""
    h = lab_harness(LAB)
    refs = [{"name": "team-cred"}, {"name": "regcred"}, {"name": "other-cred"}]
    h.kubectl("patch", "serviceaccount", "default", "-n", "default", "-p", json.dumps({"imagePullSecrets": refs}))
    try:
        h.reset()
        sa = h.kube.get("v1", "ServiceAccount", "default", "default")
        assert sa["imagePullSecrets"] == [{"name": "team-cred"}, {"name": "other-cred"}]
        assert all(q["spec"].get("imagePullSecrets") == sa["imagePullSecrets"]
                   for q in h.kube.list("v1", "Pod", "default", "app=web"))
    finally:
        h.kubectl("patch", "serviceaccount", "default", "-n", "default", "--type=json", "-p",
                  '[{"op":"remove","path":"/imagePullSecrets"}]')
        h.reset()


def test_own_pull_secrets_hide_the_service_accounts(lab_harness):
    """A template with any imagePullSecrets of its own gets none from its ServiceAccount."""
    h = lab_harness(LAB)
    docker_secret(h)
    h.kubectl("patch", "serviceaccount", "default", "-n", "default", "-p",
              json.dumps({"imagePullSecrets": [{"name": "regcred"}]}))
    patch_deployment(h, secret="regcreds")
    rollout(h)
    r = h.grade()
    assert failed_ids(r) == {"test_deployment_uses_secret", "test_pods_carry_secret"}
    assert check_of(r, "test_deployment_uses_secret").message == (
        "Deployment 'web': the pod template's imagePullSecrets is ['regcreds'], without 'regcred'. While a pod lists "
        "pull secrets of its own, its ServiceAccount's imagePullSecrets are not added to it. Look: kubectl get "
        "deployment web -n default -o jsonpath='{.spec.template.spec.imagePullSecrets}'")


def test_own_service_account_route_passes(lab_harness, cleanup):
    """A ServiceAccount of the learner's with the pull secret, set on the Deployment."""
    h = lab_harness(LAB)
    cleanup.append(("serviceaccount", "puller", "-n", "default"))
    docker_secret(h)
    h.kubectl("set", "serviceaccount", "deployment/web", "puller", "-n", "default")
    r = h.grade()
    assert check_of(r, "test_deployment_uses_secret").message == (
        "Deployment 'web': the pod template lists no imagePullSecrets and names ServiceAccount 'puller', which does "
        "not exist in namespace 'default' (kubectl get serviceaccounts -n default).")
    h.apply("""
apiVersion: v1
kind: ServiceAccount
metadata: {name: puller, namespace: default}
imagePullSecrets: [{name: regcred}]
""")
    # The ReplicaSet retries creating its pods (refused while the account was missing).
    wait_for(lambda: h.grade().passed, 60, "the Deployment's pods with the puller account")
