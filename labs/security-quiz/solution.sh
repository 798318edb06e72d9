# Reference answers. The questions about this cluster are answered the way a learner finds
# them: grep the API server's static Pod manifest and ask openssl about its certificate.
etc="$CKALAB_PKI_DIR/.."

node_file() {  # a control-plane file: on this machine (local backend) or inside the kind node
  if [ -r "$1" ]; then
    cat "$1"
  else
    docker exec "$(kubectl get nodes -l node-role.kubernetes.io/control-plane \
      -o jsonpath='{.items[0].metadata.name}')" cat "$1"
  fi
}

flag() {  # the value of --NAME=value in kube-apiserver's command line, empty when absent
  node_file "$etc/manifests/kube-apiserver.yaml" | grep -oE -- "--$1=[^\"' ]+" | head -n1 | cut -d= -f2- || true
}

modes=$(flag authorization-mode)
cidr=$(flag service-cluster-ip-range)
plugins=$(flag enable-admission-plugins)
cert=$(flag tls-cert-file)
issuer=$(node_file "${cert:-$CKALAB_PKI_DIR/apiserver.crt}" | openssl x509 -noout -issuer -nameopt RFC2253 \
  | sed -E 's/^issuer=//; s/.*CN=([^,]+).*/\1/')

cat > "{{ answers_file }}" <<YAML
authorizer-chain: c
default-authorization-mode: AlwaysAllow
cluster-authorization-modes: "${modes:-AlwaysAllow}"
default-kubeconfig: \$HOME/.kube/config
cluster-scoped-resources: [a, c, d, e, f]
kubelet-client-certificate: c
user-csr-fields: a
image-name: docker.io/library/nginx:latest
basic-auth-removed: "1.19"
switch-context: kubectl config use-context prod
clusterrole-in-one-namespace: b
netpol-pod-selector: b
service-cidr: "${cidr:-10.0.0.0/24}"
apiserver-cert-issuer: "$issuer"
admission-plugins: "${plugins:-none}"
YAML
