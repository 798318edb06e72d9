# The two pods the learner must change, as plain root pods without security settings.
# Idempotent: an existing pod is left alone (it may hold the learner's work); one still being
# deleted (right after `ckalab reset`) is waited for, then created again.
ensure_pod() {
  local name=$1 seconds=$2
  local deleting
  deleting=$(kubectl get pod "$name" -n "{{ namespace }}" -o jsonpath='{.metadata.deletionTimestamp}' 2>/dev/null || true)
  if [ -n "$deleting" ]; then
    kubectl wait --for=delete "pod/$name" -n "{{ namespace }}" --timeout=120s
  fi
  kubectl get pod "$name" -n "{{ namespace }}" >/dev/null 2>&1 && return 0
  kubectl apply -f - <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: $name
  namespace: "{{ namespace }}"
  labels: {ckalab.io/lab: "$CKALAB_LAB"}
spec:
  containers:
    - name: $name
      image: ubuntu
      command: [sleep, "$seconds"]
YAML
}
ensure_pod "{{ web_pod }}" 3600
ensure_pod "{{ cap_pod }}" 4800
