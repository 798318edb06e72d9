# Hand the learner a settled lab: the Deployment's pods exist and are Running before the task starts.
kubectl rollout status deployment "{{ deployment }}" -n "{{ namespace }}" --timeout=120s >/dev/null
