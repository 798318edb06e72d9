# Restoring the control plane (after this script) gives node01 ckalab's kubelet configuration
# back and restarts its kubelet whenever the file differs (an edited one is kept aside). What
# that leaves out: a kubelet the learner stopped while its file is ckalab's again (the right
# answer is byte for byte ckalab's file). Start it here. Idempotent; nothing to do when node01
# is no real node or its kubelet runs.
if ! ckalab ssh node01 -- true >/dev/null 2>&1; then
  exit 0
fi
if ! ckalab ssh node01 -- systemctl is-active kubelet >/dev/null 2>&1; then
  # With a file it cannot read it exits again at once; the restore that follows replaces the file
  # and starts it once more.
  ckalab ssh node01 -- systemctl start kubelet || true
fi
