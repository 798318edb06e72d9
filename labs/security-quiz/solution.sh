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

# The right choices, by their text; the letters that show them differ per variant, so ask the
# grader module (which ordered questions.md) where this variant's shuffle put each one.
read -r chain kubelet csr binding netpol scoped < <(python - "{{ shuffle }}" <<'PY'
import importlib.util
import sys

from ckalab import labs

spec = importlib.util.spec_from_file_location("security_quiz_grader", labs.graders_root() / "security-quiz.py")
grader = sys.modules[spec.name] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grader)
right = {
    "authorizer-chain": ["No authorizer allowed it, so the API server answers 403 Forbidden."],
    "kubelet-client-certificate": ["apiserver-kubelet-client.crt and apiserver-kubelet-client.key"],
    "user-csr-fields": ["signerName: kubernetes.io/kube-apiserver-client, usages: [client auth]"],
    "clusterrole-in-one-namespace": ["A RoleBinding in the namespace dev whose roleRef is the ClusterRole view."],
    "netpol-pod-selector": ["Pods labelled role=api in the namespace prod only."],
    "cluster-scoped-resources": ["PersistentVolume", "StorageClass", "Node", "Namespace",
                                 "CertificateSigningRequest"],
}
shuffle = int(sys.argv[1])
print(*(",".join(sorted(grader.letter_of(shuffle, qid, t) for t in texts)) for qid, texts in right.items()))
PY
)

cat > "{{ answers_file }}" <<YAML
authorizer-chain: $chain
default-authorization-mode: AlwaysAllow
cluster-authorization-modes: "${modes:-AlwaysAllow}"
default-kubeconfig: \$HOME/.kube/config
cluster-scoped-resources: [$scoped]
kubelet-client-certificate: $kubelet
user-csr-fields: $csr
image-name: docker.io/library/nginx:latest
basic-auth-removed: "1.19"
switch-context: kubectl config use-context prod
clusterrole-in-one-namespace: $binding
netpol-pod-selector: $netpol
service-cidr: "${cidr:-10.0.0.0/24}"
apiserver-cert-issuer: "$issuer"
admission-plugins: "${plugins:-none}"
YAML
