# Preconditions for audit-logging: the namespace (a manifest) and a free place for the policy.
# The API server's manifest is left as ckalab wrote it (start and reset restore it first).
etc=$(dirname "$CKALAB_PKI_DIR")  # what the controlplane node sees as /etc/kubernetes
if ! grep -qs '^# Written by ckalab for the controlplane node' "$etc/manifests/kube-apiserver.yaml"; then
  echo "This lab needs the control plane as static pods on a real controlplane node: start the" >&2
  echo "cluster with 'ckalab up --nodes real' (as root), then 'ckalab reset audit-logging'." >&2
  exit 1
fi
# A policy left from an earlier attempt would make the fresh lab look half done: moved aside,
# never deleted.
policy="$etc/$(echo "{{ policy }}" | sed 's|^/etc/kubernetes/||')"
if [ -e "$policy" ]; then
  mv "$policy" "$policy.before-reset.$(date +%s)"
  echo "Moved {{ policy }} aside (to $(basename "$policy").before-reset.*): the lab starts without a policy there."
fi
