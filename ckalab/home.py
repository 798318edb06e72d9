"""Where ckalab keeps its state: $CKALAB_HOME (default ~/.ckalab) and the binary cache."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_CLUSTER = "ckalab"


def home() -> Path:
    """Root of all per-user state: clusters (PKI, kubeconfigs, logs, pids) and work dirs."""
    return Path(os.environ.get("CKALAB_HOME") or Path.home() / ".ckalab").expanduser()


def cluster_dir(name: str = DEFAULT_CLUSTER) -> Path:
    return home() / "clusters" / name


def work_root() -> Path:
    return home() / "work"


def bin_cache() -> Path:
    """Built control-plane binaries, shared by every CKALAB_HOME on the machine (built once)."""
    if os.environ.get("CKALAB_BIN_CACHE"):
        return Path(os.environ["CKALAB_BIN_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ckalab" / "bin"
