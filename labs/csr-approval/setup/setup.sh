# Preconditions for csr-approval. Idempotent: nothing that already exists is replaced.
user="{{ user }}"

# The colleague's key and CSR. Never overwritten: the learner may already have used them.
if [ ! -s "$user.key" ]; then
  openssl genrsa -out "$user.key" 2048 2>/dev/null
  chmod 600 "$user.key"
  rm -f "$user.csr"
fi
[ -s "$user.csr" ] || openssl req -new -key "$user.key" -subj "/CN=$user" -out "$user.csr"

# The intruder's pending request for {{ group }}. Its key is thrown away: nobody should
# ever hold the certificate, even if the learner approves it by mistake.
if ! kubectl get csr "{{ intruder }}" >/dev/null 2>&1; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  openssl genrsa -out "$tmp/intruder.key" 2048 2>/dev/null
  openssl req -new -key "$tmp/intruder.key" -subj "/CN={{ intruder }}/O={{ group }}" -out "$tmp/intruder.csr"
  # Requests already approved now were not approved by the learner for this task: remember them
  # on the intruder's request, so the grader does not blame them (e.g. an earlier attempt's).
  approved=$(kubectl get csr -o jsonpath='{range .items[?(@.status.conditions[0].type=="Approved")]}{.metadata.name}{","}{end}')
  kubectl create -f - >/dev/null <<YAML
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: "{{ intruder }}"
  labels: {ckalab.io/lab: "$CKALAB_LAB"}
  annotations: {ckalab.io/approved-before-setup: "${approved%,}"}
spec:
  request: $(openssl base64 -A -in "$tmp/intruder.csr")
  signerName: kubernetes.io/kube-apiserver-client
  usages: [client auth]
YAML
fi
