# Reference answers. The questions about this cluster are answered the way a learner finds
# them: grep the API server's static Pod manifest and ask openssl about its certificate.
etc="$CKALAB_PKI_DIR/.."

node_file() {  # a control-plane file, read by ckalab wherever the backend keeps the node
  ckalab node-file "$1"
}

apiserver=$(node_file "$etc/manifests/kube-apiserver.yaml")  # read once: each read starts ckalab
flag() {  # the value of --NAME=value in kube-apiserver's command line, empty when absent
  grep -oE -- "--$1=[^\"' ]+" <<<"$apiserver" | head -n1 | cut -d= -f2- || true
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
import sys

from ckalab import labs
from ckalab.grading import load_grader

grader = load_grader(labs.graders_root() / "security-quiz.py")
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

# Each answer with the reason it is right: the checks only say what is wrong with an answer.
cat > "{{ answers_file }}" <<YAML
# 1. Each authorizer answers allow, deny or no opinion. Allow or deny ends the chain, no opinion
#    hands the request to the next one, and when nobody allows it the answer is 403 Forbidden.
#    RBAC never denies; it can only allow.
authorizer-chain: $chain
# 2. Without the flag kube-apiserver falls back to AlwaysAllow. kubeadm and kind set
#    --authorization-mode=Node,RBAC explicitly; "Node is the default" is a common mistake.
default-authorization-mode: AlwaysAllow
# 3. The value of --authorization-mode in the API server's static Pod manifest, in its order:
#    the authorizers are asked one after the other.
cluster-authorization-modes: "${modes:-AlwaysAllow}"
# 4. kubectl's default kubeconfig is the file config in the .kube folder of your home directory
#    (/root/.kube/config for the exam's root user). --kubeconfig overrides it for one command,
#    KUBECONFIG for the whole shell.
default-kubeconfig: \$HOME/.kube/config
# 5. PersistentVolumes, StorageClasses, Nodes, Namespaces and CertificateSigningRequests belong to
#    no namespace; PersistentVolumeClaims and RoleBindings do (kubectl api-resources --namespaced=false).
cluster-scoped-resources: [$scoped]
# 6. Towards a kubelet the API server is a client: --kubelet-client-certificate and
#    --kubelet-client-key name apiserver-kubelet-client.crt/.key (not ca.pem or apiserver.crt).
kubelet-client-certificate: $kubelet
# 7. certificates.k8s.io/v1 requires a signerName; API server clients use
#    kubernetes.io/kube-apiserver-client, and a client certificate needs the usage client auth.
user-csr-fields: $csr
# 8. No registry means Docker Hub (docker.io), no namespace means its library namespace of
#    official images, no tag means latest (not docker.io/nginx/nginx).
image-name: docker.io/library/nginx:latest
# 9. --basic-auth-file was deprecated in 1.16 and removed in 1.19; token files remain.
basic-auth-removed: "1.19"
# 10. use-context switches (k config use-context prod is the same command); view and
#     get-contexts only show, set-context edits a context without switching to it.
switch-context: kubectl config use-context prod
# 11. A RoleBinding may reference a ClusterRole and then grants its rules in the RoleBinding's
#     namespace only; a ClusterRoleBinding has no namespace and grants everywhere.
clusterrole-in-one-namespace: $binding
# 12. A podSelector peer without a namespaceSelector matches pods in the policy's own namespace.
netpol-pod-selector: $netpol
# 13. The value of --service-cluster-ip-range (the kubernetes Service takes its first address).
service-cidr: "${cidr:-10.0.0.0/24}"
# 14. The issuer of the certificate --tls-cert-file names: openssl x509 -noout -issuer.
apiserver-cert-issuer: "$issuer"
# 15. The value of --enable-admission-plugins, in any order (the API server runs them in its own).
admission-plugins: "${plugins:-none}"
YAML
