"""`python -m ckalab.cluster.local`: build (or reuse) the control-plane binaries and print their
paths; with CKALAB_REAL_NODES=1 (or CKALAB_NODES=real) also the real nodes' (kubelet, kubeadm,
containerd, runc, crictl, etcdctl, pause, clockprobe), so a build is not counted in a test."""

import os

from .build import NODE_GROUPS, ensure_binaries

found = ensure_binaries()
if os.environ.get("CKALAB_REAL_NODES") == "1" or os.environ.get("CKALAB_NODES", "").lower() == "real":
    found.update(ensure_binaries(groups=NODE_GROUPS))
for name, path in sorted(found.items()):
    print(f"{name:<24} {path}")
