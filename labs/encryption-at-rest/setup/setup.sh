# Preconditions for encryption-at-rest: the namespace and its Secrets come from the manifest
# (written in plain form: start and reset give back ckalab's API server, without encryption,
# first). A configuration left from an earlier attempt is moved aside, never deleted.
etc=$(dirname "$CKALAB_PKI_DIR")  # what the controlplane node sees as /etc/kubernetes
if ! grep -qs '^# Written by ckalab for the controlplane node' "$etc/manifests/kube-apiserver.yaml"; then
  echo "This lab needs the control plane as static pods on a real controlplane node: start the" >&2
  echo "cluster with 'ckalab up --nodes real' (as root), then 'ckalab reset encryption-at-rest'." >&2
  exit 1
fi
config="$etc/$(echo "{{ config }}" | sed 's|^/etc/kubernetes/||')"
if [ -e "$config" ]; then
  mv "$config" "$config.before-reset.$(date +%s)"
  echo "Moved {{ config }} aside (to $(basename "$config").before-reset.*): the lab starts without it."
fi
