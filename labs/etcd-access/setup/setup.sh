# Preconditions for etcd-access: one value stored straight into etcd (it is no Kubernetes object,
# so only etcdctl shows it). Idempotent: an existing value is kept, so an answer stays right.
if ! ckalab ssh controlplane -- true >/dev/null 2>&1; then
  echo "Note: this cluster has no shell on its controlplane node, so nothing was written into etcd." >&2
  exit 0
fi
ckalab ssh controlplane -- sh -eu -s <<'NODE'
pki=/etc/kubernetes/pki
# The address etcd serves clients on, as its own manifest says.
url=$(sed -n 's/^ *- *--listen-client-urls=\([^,]*\).*/\1/p' /etc/kubernetes/manifests/etcd.yaml | head -n 1)
e() {
  etcdctl --endpoints="$url" --cacert=$pki/etcd/ca.crt --cert=$pki/apiserver-etcd-client.crt \
    --key=$pki/apiserver-etcd-client.key --dial-timeout=5s --command-timeout=10s "$@"
}
if [ -z "$(e get --prefix --keys-only /ckalab/etcd-access/)" ]; then
  e put "/ckalab/etcd-access/{{ note }}" "$(openssl rand -hex 10)" >/dev/null
fi
NODE
