# The API server runs with ckalab's manifest (start and reset restore it first), so only
# NodeRestriction is enabled beyond the defaults. The namespace starts without the node-selector
# annotation, so that PodNodeSelector's half of the task is the learner's.
etc=$(dirname "$CKALAB_PKI_DIR")
if ! grep -qs '^# Written by ckalab for the controlplane node' "$etc/manifests/kube-apiserver.yaml"; then
  echo "This lab needs the control plane as static pods on a real controlplane node: start the" >&2
  echo "cluster with 'ckalab up --nodes real' (as root), then 'ckalab reset admission-plugins'." >&2
  exit 1
fi
kubectl annotate namespace "{{ namespace }}" scheduler.alpha.kubernetes.io/node-selector- >/dev/null
echo "The API server runs with --enable-admission-plugins=NodeRestriction; namespace {{ namespace }} is ready."
