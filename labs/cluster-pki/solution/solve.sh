# Reference solution: read the answers off the cluster as a learner would, with grep and openssl.
pki=$CKALAB_PKI_DIR
manifests="$(dirname "$pki")/manifests"
# the files live on the control-plane node, wherever the backend keeps it: ckalab reads them
rd() { ckalab node-file "$1"; }
# each manifest is read once (every read starts ckalab), then searched many times
declare -A manifest
for c in kube-apiserver etcd; do manifest[$c]=$(rd "$manifests/$c.yaml"); done
# flag COMPONENT NAME: the value of --NAME in the component's static Pod manifest
flag() { grep -E -- "^\s*- --$2=" <<<"${manifest[$1]}" | head -n1 | sed 's/^[^=]*=//'; }
# x509 FILE ARGS...: openssl x509 on a file of the control plane
x509() { rd "$1" | openssl x509 -noout "${@:2}"; }
cn() { sed -n 's/.*CN=\([^,]*\).*/\1/p'; }

serving=$(flag kube-apiserver tls-cert-file)
etcd_serving=$(flag etcd cert-file)

{
  echo "apiserver_kubelet_client_cert: $(flag kube-apiserver kubelet-client-certificate)"
  echo "apiserver_kubelet_client_key: $(flag kube-apiserver kubelet-client-key)"
  echo "apiserver_etcd_client_cert: $(flag kube-apiserver etcd-certfile)"
  echo "apiserver_sans:"
  # openssl prints "DNS:a, DNS:b, IP Address:1.2.3.4" on the line after the header
  x509 "$serving" -ext subjectAltName | tail -n +2 | sed 's/^ *//; s/, /\n/g' | sed 's/.*/  - "&"/'
  echo "etcd_server_issuer_cn: $(x509 "$etcd_serving" -issuer -nameopt RFC2253 | cn)"
  echo "apiserver_cert_expiry: \"$(x509 "$serving" -enddate | cut -d= -f2)\""
  echo "ca_cn: $(x509 "$(flag kube-apiserver client-ca-file)" -subject -nameopt RFC2253 | cn)"
  echo "etcd_client_ca_file: $(flag etcd trusted-ca-file)"
} > "{{ answers_file }}"
