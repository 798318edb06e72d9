# Reference solution for audit-logging: the policy on the node, then the API server's manifest
# gets the four flags and a hostPath volume + mount for each of the two directories.
case "{{ resource }}" in roles) group=rbac.authorization.k8s.io ;; *) group="" ;; esac
ckalab ssh controlplane -- sh -eu -c 'mkdir -p "$(dirname "$1")" && cat > "$1"' sh "{{ policy }}" <<EOF_POLICY
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  resources:
  - group: ""
    resources: [secrets]
  namespaces: [{{ namespace }}]
- level: RequestResponse
  resources:
  - group: "$group"
    resources: [{{ resource }}]
  namespaces: [{{ namespace }}]
- level: None
EOF_POLICY

# The running container, to know when the kubelet has replaced it.
before=$(ckalab ssh controlplane -- crictl ps --name kube-apiserver --state running -q | head -n 1)

# The manifest (the node's /etc/kubernetes is the cluster's etc/kubernetes here), edited beside
# its folder and moved in, so the kubelet never reads half a file.
etc=$(dirname "$CKALAB_PKI_DIR")
python - "$etc/manifests/kube-apiserver.yaml" "$etc/kube-apiserver.yaml.new" <<'PY'
import os
import sys

import yaml

src, tmp = sys.argv[1:]
pod = yaml.safe_load(open(src))
c = pod["spec"]["containers"][0]
want = {"audit-policy-file": "{{ policy }}", "audit-log-path": "{{ log }}",
        "audit-log-maxage": "{{ maxage }}", "audit-log-maxbackup": "{{ maxbackup }}"}
c["command"] = [a for a in c["command"] if a.split("=", 1)[0][2:] not in want]
c["command"] += [f"--{k}={v}" for k, v in want.items()]
for name, path, ro in (("lab-audit-policy", os.path.dirname("{{ policy }}"), True),
                       ("lab-audit-log", os.path.dirname("{{ log }}"), False)):
    c["volumeMounts"].append({"name": name, "mountPath": path, "readOnly": ro})
    pod["spec"]["volumes"].append({"name": name, "hostPath": {"path": path, "type": "DirectoryOrCreate"}})
with open(tmp, "w") as f:
    yaml.safe_dump(pod, f, sort_keys=False)
PY
mv "$etc/kube-apiserver.yaml.new" "$etc/manifests/kube-apiserver.yaml"

# The kubelet starts a new container within ~15-40 s; then /readyz answers again.
for _ in $(seq 150); do
  now=$(ckalab ssh controlplane -- crictl ps --name kube-apiserver --state running -q 2>/dev/null | head -n 1)
  if [ -n "$now" ] && [ "$now" != "$before" ] && kubectl get --raw=/readyz --request-timeout=2s >/dev/null 2>&1; then
    exit 0
  fi
  sleep 1
done
echo "The API server did not come back with the audit settings within 150 s (ckalab status)." >&2
exit 1
