# Loosen node01's kubelet the way a hand-made node is often left: anonymous callers come in as
# system:anonymous, bearer tokens are not checked with the API server, every caller may do
# everything, and the unauthenticated read-only port is open. Then restart that kubelet, as the
# learner will, and wait until it answers anonymous requests. start/reset first give node01
# ckalab's own configuration back (restoring the control plane), so this always edits a known file.
if ! ckalab ssh node01 -- true >/dev/null 2>&1; then
  echo "This lab needs a real node01 with a kubelet: start the cluster with 'ckalab up --nodes real'" >&2
  echo "(as root), then 'ckalab reset kubelet-security'." >&2
  exit 1
fi
conf=/var/lib/kubelet/config.yaml
ckalab ssh node01 -- cat "$conf" | python -c '
import sys, yaml
c = yaml.safe_load(sys.stdin)
auth = c.setdefault("authentication", {})
auth["anonymous"] = {"enabled": True}
auth["webhook"] = {"enabled": False}
c["authorization"] = {"mode": "AlwaysAllow"}
c["readOnlyPort"] = {{ read_only_port }}
sys.stdout.write(yaml.safe_dump(c, sort_keys=False))
' > loosened.yaml
# Written beside the file and moved over it: the kubelet never reads half a file.
ckalab ssh node01 -- sh -c "cat > $conf.ckalab-setup && mv $conf.ckalab-setup $conf" < loosened.yaml
rm -f loosened.yaml
ckalab ssh node01 -- systemctl restart kubelet
ip=$(kubectl get node node01 -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
for _ in $(seq 120); do
  code=$(ckalab ssh node01 -- curl -sk --max-time 2 -o /dev/null -w '%{http_code}' "https://$ip:10250/healthz" || true)
  [ "$code" = 200 ] && exit 0
  sleep 0.5
done
echo "node01's kubelet did not answer on $ip:10250 within 60 s after its restart; look: ckalab ssh node01 -- journalctl -u kubelet -n 30" >&2
exit 1
