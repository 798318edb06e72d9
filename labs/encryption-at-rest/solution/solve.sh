# Reference solution for encryption-at-rest: a {{ provider }} key first, identity after it (the
# plain Secrets stay readable), the API server pointed at the file through a hostPath volume,
# then every Secret of the namespace written again so that it is stored encrypted.
ckalab ssh controlplane -- sh -eu -c '
  mkdir -p "$(dirname "$1")"
  umask 077
  cat > "$1" <<EOF_CONFIG
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - {{ provider }}:
      keys:
      - name: key1
        secret: $(head -c 32 /dev/urandom | base64)
  - identity: {}
EOF_CONFIG' sh "{{ config }}"

before=$(ckalab ssh controlplane -- crictl ps --name kube-apiserver --state running -q | head -n 1)
etc=$(dirname "$CKALAB_PKI_DIR")  # the node's /etc/kubernetes
python - "$etc/manifests/kube-apiserver.yaml" "$etc/kube-apiserver.yaml.new" <<'PY'
import os
import sys

import yaml

src, tmp = sys.argv[1:]
pod = yaml.safe_load(open(src))
c = pod["spec"]["containers"][0]
c["command"] = [a for a in c["command"] if not a.startswith("--encryption-provider-config=")]
c["command"].append("--encryption-provider-config={{ config }}")
d = os.path.dirname("{{ config }}")
c["volumeMounts"].append({"name": "encryption-config", "mountPath": d, "readOnly": True})
pod["spec"]["volumes"].append({"name": "encryption-config", "hostPath": {"path": d, "type": "DirectoryOrCreate"}})
with open(tmp, "w") as f:
    yaml.safe_dump(pod, f, sort_keys=False)
PY
mv "$etc/kube-apiserver.yaml.new" "$etc/manifests/kube-apiserver.yaml"

for _ in $(seq 150); do
  now=$(ckalab ssh controlplane -- crictl ps --name kube-apiserver --state running -q 2>/dev/null | head -n 1)
  if [ -n "$now" ] && [ "$now" != "$before" ] && kubectl get --raw=/readyz --request-timeout=2s >/dev/null 2>&1; then
    break
  fi
  sleep 1
done
kubectl get --raw=/readyz --request-timeout=5s >/dev/null
kubectl get secrets -n "{{ namespace }}" -o json | kubectl replace -f - >/dev/null
