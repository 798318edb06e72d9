# Make the cluster's PKI easy to reach from the work dir, and give the learner an answers
# template. Idempotent: links are refreshed, an existing answers file is never touched.
manifests="$(dirname "$CKALAB_PKI_DIR")/manifests"
if [ -d "$CKALAB_PKI_DIR" ]; then
  # local backend: the kubeadm-layout tree is on this machine
  for link in pki manifests; do
    target=$CKALAB_PKI_DIR
    [ "$link" = manifests ] && target=$manifests
    # replace only our own link, never a file or directory the learner made
    if [ -L "$link" ] || [ ! -e "$link" ]; then ln -sfn "$target" "$link"; fi
  done
  cat > WHERE.txt <<NOTE
PKI directory (kubeadm: /etc/kubernetes/pki):              $CKALAB_PKI_DIR   (link: pki/)
Static Pod manifests (kubeadm: /etc/kubernetes/manifests): $manifests   (link: manifests/)
NOTE
else
  # the files are not on this machine (e.g. inside a kind node container): ckalab reads them
  node=$(kubectl get nodes -l node-role.kubernetes.io/control-plane -o jsonpath='{.items[0].metadata.name}')
  cat > WHERE.txt <<NOTE
The PKI ($CKALAB_PKI_DIR) and manifests ($manifests) are on the control-plane node '$node'.
Print one of its files with: ckalab node-file $CKALAB_PKI_DIR/apiserver.crt
NOTE
fi

if [ ! -e "{{ answers_file }}" ]; then
  cat > "{{ answers_file }}" <<'YAML'
# Lab cluster-pki: fill in every value, then run: ckalab check cluster-pki
# Paths: absolute, or relative to the PKI directory (e.g. etcd/ca.crt).

# 1. The certificate kube-apiserver presents to the kubelets (its client certificate)
apiserver_kubelet_client_cert: ""
# 2. The private key that goes with it
apiserver_kubelet_client_key: ""
# 3. The certificate kube-apiserver presents to etcd
apiserver_etcd_client_cert: ""
# 4. Every Subject Alternative Name of the API server's serving certificate, as a list
apiserver_sans: []
# 5. The CN of the issuer of etcd's serving certificate
etcd_server_issuer_cn: ""
# 6. The date the API server's serving certificate expires (2027-11-27 or Nov 27 09:50:00 2027 GMT)
apiserver_cert_expiry: ""
# 7. The CN of the CA that kube-apiserver trusts for client certificates
ca_cn: ""
# 8. The CA file etcd uses to verify its clients' certificates
etcd_client_ca_file: ""
YAML
fi
