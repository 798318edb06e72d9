# Reference solution, as on the node: the container's log names the problem; the manifest gets
# the right file for the one wrong flag, written beside the manifests folder and moved in.
fix() {
  ckalab ssh controlplane -- sh -c '
    m=/etc/kubernetes/manifests/kube-apiserver.yaml
    sed -E "s|^( *- --$1=).*\$|\1$2|" "$m" > /etc/kubernetes/kube-apiserver.yaml.fixed &&
    mv /etc/kubernetes/kube-apiserver.yaml.fixed "$m"' sh "$1" "$2"
}
case "{{ fault }}" in
  etcd-certfile)  fix etcd-certfile /etc/kubernetes/pki/apiserver-etcd-client.crt ;;
  client-ca-file) fix client-ca-file /etc/kubernetes/pki/ca.crt ;;
  tls-cert-file)  fix tls-cert-file /etc/kubernetes/pki/apiserver.crt ;;
  key-mismatch)   fix tls-private-key-file /etc/kubernetes/pki/apiserver-renewed.key ;;
  expired-cert)   fix tls-cert-file /etc/kubernetes/pki/apiserver.crt
                  fix tls-private-key-file /etc/kubernetes/pki/apiserver.key ;;
esac
# The kubelet starts the API server again within ~15 s.
for _ in $(seq 120); do
  kubectl get --raw=/readyz --request-timeout=2s >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "The API server did not come back within 120 s (ckalab status)." >&2
exit 1
