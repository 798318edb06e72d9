# Reference solution for csr-approval.
user="{{ user }}"
# The request is the whole PEM file, base64-encoded on one line (base64 -w0 on Linux;
# openssl base64 -A works everywhere).
kubectl apply -f - <<YAML
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: "$user"
spec:
  request: $(openssl base64 -A -in "$user.csr")
  signerName: kubernetes.io/kube-apiserver-client
  usages: [client auth]
YAML
kubectl certificate approve "$user"
kubectl certificate deny "{{ intruder }}"
# kube-controller-manager signs approved requests within a second or so.
# The controller manager signs it in a moment; right after an API server restart its watch can
# take up to half a minute to come back (client-go's retry back-off), hence the margin.
kubectl wait "csr/$user" --for=jsonpath='{.status.certificate}' --timeout=90s >/dev/null
kubectl get csr "$user" -o jsonpath='{.status.certificate}' | openssl base64 -d -A > "$user.crt"
