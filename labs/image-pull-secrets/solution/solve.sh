# Reference solution: the docker-registry Secret, then the pull secret in the pod template.
# Idempotent: the Secret is rendered with --dry-run and applied.
kubectl create secret docker-registry "{{ secret }}" -n "{{ namespace }}" \
  --docker-server="{{ server }}" --docker-username="{{ username }}" \
  --docker-password="{{ password }}" --docker-email="{{ email }}" \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl patch deployment "{{ deployment }}" -n "{{ namespace }}" \
  -p '{"spec":{"template":{"spec":{"imagePullSecrets":[{"name":"{{ secret }}"}]}}}}'
kubectl label secret "{{ secret }}" -n "{{ namespace }}" "ckalab.io/lab=$CKALAB_LAB" --overwrite
# Pods are never updated in place: the rollout replaces them, so wait for it as a learner would.
kubectl rollout status deployment "{{ deployment }}" -n "{{ namespace }}" --timeout=120s
