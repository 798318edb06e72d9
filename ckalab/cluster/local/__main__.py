"""`python -m ckalab.cluster.local`: build (or reuse) the control-plane binaries and print their paths."""

from .build import ensure_binaries

for name, path in sorted(ensure_binaries().items()):
    print(f"{name:<24} {path}")
