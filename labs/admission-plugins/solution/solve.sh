# Reference solution: the namespace's annotation first (while the API server answers), then the
# plugin added to the flag on the node, the manifest written beside its folder and moved in.
if [ "{{ plugin }}" = PodNodeSelector ]; then
  kubectl annotate namespace "{{ namespace }}" --overwrite \
    scheduler.alpha.kubernetes.io/node-selector="{{ selector }}"
fi
ckalab ssh controlplane -- sh -c '
  m=/etc/kubernetes/manifests/kube-apiserver.yaml
  sed -E "s|^( *- --enable-admission-plugins=NodeRestriction)\$|\1,$1|" "$m" > /etc/kubernetes/kube-apiserver.yaml.new &&
  grep -q -- "--enable-admission-plugins=NodeRestriction,$1\$" /etc/kubernetes/kube-apiserver.yaml.new &&
  mv /etc/kubernetes/kube-apiserver.yaml.new "$m"' sh "{{ plugin }}"

# The kubelet restarts the API server within ~15 s; wait until the plugin acts.
probe() {
  case "{{ plugin }}" in
    PodNodeSelector) kubectl run probe -n "{{ namespace }}" --image=busybox:1.36 --image-pull-policy=IfNotPresent \
                       --dry-run=server -o jsonpath='{.spec.nodeSelector}' --request-timeout=3s | grep -q . ;;
    AlwaysPullImages) kubectl run probe -n "{{ namespace }}" --image=busybox:1.36 --image-pull-policy=IfNotPresent \
                        --dry-run=server -o jsonpath='{.spec.containers[0].imagePullPolicy}' --request-timeout=3s |
                        grep -qx Always ;;
    DenyServiceExternalIPs) ! printf '%s\n' 'apiVersion: v1' 'kind: Service' 'metadata: {name: probe}' \
                              'spec: {ports: [{port: 80}], externalIPs: [192.0.2.10]}' |
                              kubectl create -n "{{ namespace }}" --dry-run=server --request-timeout=3s -f - >/dev/null 2>&1 &&
                            kubectl get --raw /readyz --request-timeout=3s >/dev/null 2>&1 ;;
  esac
}
# The plugin acts as soon as the new API server serves; /readyz says 500 a little longer (its
# post-start hooks), and the checks want both.
sleep 3  # the old API server stops first
for _ in $(seq 120); do
  probe 2>/dev/null && kubectl get --raw /readyz --request-timeout=3s >/dev/null 2>&1 && exit 0
  sleep 1
done
echo "{{ plugin }} did not take effect within 120 s (ckalab status; crictl logs of kube-apiserver)." >&2
exit 1
