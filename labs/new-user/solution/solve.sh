# Reference solution for new-user: the whole chain with openssl and kubectl.
user="{{ user }}"
ns="{{ namespace }}"

# 1. key and request (no O=: the user joins no group)
openssl genrsa -out "$user.key" 2048 2>/dev/null
openssl req -new -key "$user.key" -subj "/CN=$user" -out "$user.csr"

# 2. the Certificates API signs it; the request is the whole PEM file, base64 on one line
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
# The controller manager signs it in a moment; right after an API server restart its watch can
# take up to half a minute to come back (client-go's retry back-off), hence the margin.
kubectl wait "csr/$user" --for=jsonpath='{.status.certificate}' --timeout=90s >/dev/null
kubectl get csr "$user" -o jsonpath='{.status.certificate}' | openssl base64 -d -A > "$user.crt"

# 3. the kubeconfig: the API server and CA as the admin kubeconfig has them
server=$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.server}')
ca_data=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
if [ -n "$ca_data" ]; then
  printf '%s' "$ca_data" | openssl base64 -d -A > ca.crt
else
  cp "$(kubectl config view --minify -o jsonpath='{.clusters[0].cluster.certificate-authority}')" ca.crt
fi
kc="$user.kubeconfig"
kubectl config --kubeconfig="$kc" set-cluster lab --server="$server" --certificate-authority=ca.crt --embed-certs=true
kubectl config --kubeconfig="$kc" set-credentials "$user" --client-certificate="$user.crt" \
  --client-key="$user.key" --embed-certs=true
kubectl config --kubeconfig="$kc" set-context "$user" --cluster=lab --user="$user" --namespace="$ns"
kubectl config --kubeconfig="$kc" use-context "$user"

# 4. the Role (two rules: pods are in the core group, deployments in apps) and its binding.
# A binding's roleRef cannot change: one of this name bound to another role goes first.
if [ "$(kubectl get rolebinding "{{ binding }}" -n "$ns" -o jsonpath='{.roleRef.name}' 2>/dev/null)" \
     != "{{ role }}" ]; then
  kubectl delete rolebinding "{{ binding }}" -n "$ns" --ignore-not-found >/dev/null
fi
kubectl apply -f - <<YAML
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: "{{ role }}", namespace: "$ns"}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get, list, watch]}
- {apiGroups: [apps], resources: [deployments], verbs: [get, list, create, update, delete]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: "{{ binding }}", namespace: "$ns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: "{{ role }}"}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: "$user"}]
YAML
