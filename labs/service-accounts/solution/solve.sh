# The ServiceAccount, Role and RoleBinding come from rbac.yaml; here the Deployment switches to
# the account, which starts a rollout of pods that run as it.
kubectl set serviceaccount deployment "{{ deployment }}" "{{ sa }}" -n "{{ namespace }}"
kubectl rollout status deployment "{{ deployment }}" -n "{{ namespace }}" --timeout=60s
