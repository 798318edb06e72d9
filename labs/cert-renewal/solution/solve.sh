# Reference solution, on the node: see what expires, renew the two certificates with kubeadm,
# then restart the API server's static pod by moving its manifest out and back.
ckalab ssh controlplane -- sh -c '
  set -e
  kubeadm certs check-expiration
  kubeadm certs renew apiserver
  kubeadm certs renew "$1"
  m=/etc/kubernetes/manifests/kube-apiserver.yaml
  mv "$m" /etc/kubernetes/kube-apiserver.yaml
  # Back only once the kubelet has removed the old pod (its sandbox too): a manifest put back
  # while the old pod is still being torn down can wait minutes before it starts.
  for i in $(seq 90); do
    [ -z "$(crictl pods -q --name kube-apiserver --state ready 2>/dev/null)" ] && break
    sleep 1
  done
  sleep 5
  mv /etc/kubernetes/kube-apiserver.yaml "$m"' sh "{{ also }}"
for _ in $(seq 120); do
  kubectl get --raw=/readyz --request-timeout=2s >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "The API server did not come back within 120 s (ckalab status)." >&2
exit 1
