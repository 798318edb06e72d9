# Reference solution: the docker-registry Secret, then the pull secret in the pod template.
# Idempotent: the Secret is rendered with --dry-run and applied.
kubectl create secret docker-registry "{{ secret }}" -n "{{ namespace }}" \
  --docker-server="{{ server }}" --docker-username="{{ username }}" \
  --docker-password="{{ password }}" --docker-email="{{ email }}" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl label secret "{{ secret }}" -n "{{ namespace }}" "ckalab.io/lab=$CKALAB_LAB" --overwrite
kubectl patch deployment "{{ deployment }}" -n "{{ namespace }}" \
  -p '{"spec":{"template":{"spec":{"imagePullSecrets":[{"name":"{{ secret }}"}]}}}}'
# Pods are never updated in place: the Deployment replaces them. Wait until it has seen the
# change and all its pods are new ones, which happens on every backend; `kubectl rollout status`
# would also wait for them to become ready, which never happens where the registry is out of reach
# (kind; on real nodes the grader waits for them to pull and run).
dep="deployment/{{ deployment }}"
wait_status() { kubectl wait "$dep" -n "{{ namespace }}" --for="jsonpath={.status.$1}=$2" --timeout=120s >/dev/null; }
wait_status observedGeneration "$(kubectl get "$dep" -n "{{ namespace }}" -o jsonpath='{.metadata.generation}')"
wait_status updatedReplicas 2
wait_status replicas 2
