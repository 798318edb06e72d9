# Reference solution for kubelet-security: on node01, switch the kubelet's API to webhook
# authentication and authorization without anonymous callers, close the read-only port, restart
# the kubelet and wait until it serves again.
ckalab ssh node01 -- sh -eu -c '
f=/var/lib/kubelet/config.yaml
sed -i \
  -e "/^  anonymous:/,/enabled:/ s/enabled: true/enabled: false/" \
  -e "/^  webhook:/,/enabled:/ s/enabled: false/enabled: true/" \
  -e "s/^  mode: AlwaysAllow/  mode: Webhook/" \
  -e "s/^readOnlyPort: .*/readOnlyPort: 0/" $f
systemctl restart kubelet'
ip=$(kubectl get node node01 -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}')
# Back when it answers again; an anonymous caller now gets 401.
for _ in $(seq 120); do
  [ "$(ckalab ssh node01 -- curl -sk --max-time 2 -o /dev/null -w '%{http_code}' "https://$ip:10250/healthz" || true)" = 401 ] && break
  sleep 0.5
done
kubectl wait --for=condition=Ready node/node01 --timeout=60s
