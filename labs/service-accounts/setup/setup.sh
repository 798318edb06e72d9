# Wait for what happens on every backend: the Deployment has created its pods (whether their
# containers run is up to the cluster; a rollout may never finish where images cannot be pulled).
kubectl wait deployment "{{ deployment }}" -n "{{ namespace }}" --for=jsonpath='{.status.replicas}'=2 --timeout=120s >/dev/null
