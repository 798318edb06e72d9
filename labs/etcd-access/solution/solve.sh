# Reference solution for etcd-access: etcdctl on the controlplane node with the API server's etcd
# client certificate; the answers land in the work directory (on this machine).
node_etcdctl() {
  ckalab ssh controlplane -- sh -eu -c '
    pki=/etc/kubernetes/pki
    url=$(sed -n "s/^ *- *--listen-client-urls=\([^,]*\).*/\1/p" /etc/kubernetes/manifests/etcd.yaml | head -n 1)
    exec etcdctl --endpoints="$url" --cacert=$pki/etcd/ca.crt --cert=$pki/apiserver-etcd-client.crt \
      --key=$pki/apiserver-etcd-client.key "$@"' sh "$@"
}
if ckalab ssh controlplane -- true >/dev/null 2>&1; then
  node_etcdctl get --prefix /ckalab/ --print-value-only | sed '/^$/d' > etcd-value.txt
  node_etcdctl get --prefix --keys-only "/registry/secrets/{{ namespace }}/{{ secret }}" | sed '/^$/d' > secret-key.txt
else
  # No node to run etcdctl on (kwok nodes): the value cannot be read, the key follows the layout
  # /registry/<resource>/<namespace>/<name>.
  echo "Note: no shell on the controlplane node; etcd-value.txt is left out." >&2
  echo "/registry/secrets/{{ namespace }}/{{ secret }}" > secret-key.txt
fi
echo b > why.txt
