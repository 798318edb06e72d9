# Gives the user a client certificate signed through the Certificates API, plus the cluster CA.
# Idempotent: a certificate that still verifies against the current cluster CA is kept.
user="{{ user }}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The cluster CA as the admin kubeconfig carries it: the same on every backend.
ca_data=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
if [ -n "$ca_data" ]; then
  printf '%s' "$ca_data" | openssl base64 -d -A > "$tmp/ca.crt"
else
  cp "$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')" "$tmp/ca.crt"
fi
cmp -s "$tmp/ca.crt" ca.crt || cp "$tmp/ca.crt" ca.crt

still_valid() {
  [ -s "$user.key" ] && [ -s "$user.crt" ] &&
    openssl verify -CAfile ca.crt "$user.crt" >/dev/null 2>&1 &&
    openssl x509 -checkend 86400 -noout -in "$user.crt" >/dev/null &&
    [ "$(openssl x509 -noout -pubkey -in "$user.crt")" = "$(openssl pkey -in "$user.key" -pubout)" ]
}

if ! still_valid; then
  csr="ckalab-$CKALAB_LAB-$user"
  openssl genrsa -out "$user.key" 2048 2>/dev/null
  chmod 600 "$user.key"
  openssl req -new -key "$user.key" -subj "/CN=$user" -out "$tmp/$user.csr"
  # Only our own (labelled) request of that name is ever replaced.
  kubectl delete csr -l "ckalab.io/lab=$CKALAB_LAB" --field-selector "metadata.name=$csr" >/dev/null
  kubectl create -f - >/dev/null <<YAML
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: "$csr"
  labels: {ckalab.io/lab: "$CKALAB_LAB"}
spec:
  request: $(openssl base64 -A -in "$tmp/$user.csr")
  signerName: kubernetes.io/kube-apiserver-client
  usages: [client auth]
YAML
  kubectl certificate approve "$csr" >/dev/null
  kubectl wait "csr/$csr" --for=jsonpath='{.status.certificate}' --timeout=120s >/dev/null
  kubectl get csr "$csr" -o jsonpath='{.status.certificate}' | openssl base64 -d -A > "$user.crt"
  # The certificate is all we need; removing the request leaves nothing behind that reset
  # (which only knows the kinds in lab.yaml) would miss.
  kubectl delete csr "$csr" >/dev/null
fi
