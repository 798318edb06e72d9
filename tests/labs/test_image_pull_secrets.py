"""image-pull-secrets grader: the reference and other correct forms pass; wrong Secrets, wrong
placements and stale pods fail with pinned messages."""

import base64
import json

from conftest import check_of, failed_ids

from ckalab.waiting import wait_for

LAB = "image-pull-secrets"
SERVER, USER, PASSWORD, EMAIL = "private-registry.io", "registry-user", "registry-password", "registry-user@org.com"


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
    assert failed_ids(r) == {c.id for c in r.checks}
    assert check_of(r, "test_secret_exists").message == (
        "Secret 'regcred' not found in namespace 'default'. Create it: kubectl create secret docker-registry "
        "regcred --docker-server=private-registry.io ... -n default")
    assert check_of(r, "test_secret_credentials").message == (
        'Not checked yet: first fix "Secret has type kubernetes.io/dockerconfigjson".')
    assert check_of(r, "test_deployment_uses_secret").message == (
        "Deployment 'web': the pod template's imagePullSecrets is empty; expected it to list 'regcred' "
        "(spec.template.spec.imagePullSecrets). Look: kubectl get deployment web -n default -o "
        "jsonpath='{.spec.template.spec.imagePullSecrets}'")


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
        "kubernetes.io/dockercfg) Secrets to pull images, and a Secret's type cannot be changed. Delete it and "
        "create it with: kubectl create secret docker-registry regcred --docker-server=private-registry.io "
        "--docker-username=... --docker-password=... --docker-email=... -n default")


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
        "Secret 'regcred': no auths entry is for the registry 'private-registry.io' (found: "
        "'https://index.docker.io/v1/'). Use --docker-server=private-registry.io.")


def test_auth_field_disagreeing_with_username_fails(lab_harness):
    h = lab_harness(LAB)
    config_secret(h, {"auths": {SERVER: {"username": USER, "password": PASSWORD,
                                         "auth": b64(f"someone-else:{PASSWORD}")}}})
    patch_deployment(h)
    rollout(h)
    r = h.grade()
    assert check_of(r, "test_secret_credentials").message == (
        "Secret 'regcred': auths entry 'private-registry.io': the auth field and the username/password fields "
        "disagree (the kubelet uses auth). Recreate the Secret with kubectl create secret docker-registry.")


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
        "Secret 'regcred': auths entry 'private-registry.io': the auth field is not base64 of \"username:password\"; "
        "the kubelet cannot decode it. Build it with: echo -n 'USER:PASSWORD' | base64 -w0")


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
        "created before the change. Wait for the rollout (kubectl rollout status deployment web -n default); "
        "pods are never updated in place.")
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
        "Deployment 'web': the pod template's imagePullSecrets is empty;")


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


def test_image_without_registry_host_fails(lab_harness):
    """Dropping the registry host sends the pull to Docker Hub, where the secret does not apply."""
    h = lab_harness(LAB)
    docker_secret(h)
    patch_deployment(h)
    h.kubectl("set", "image", "deployment/web", "app=apps/internal-app", "-n", "default")
    r = h.grade()
    assert failed_ids(r) == {"test_deployment_uses_secret", "test_pods_carry_secret"}
    assert check_of(r, "test_deployment_uses_secret").message == (
        "Deployment 'web' now uses ['apps/internal-app'], which is not from 'private-registry.io' (a name without a "
        "registry host means docker.io). Keep the image private-registry.io/apps/internal-app.")
