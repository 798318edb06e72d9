"""Cluster backends behind one interface. The cluster layer knows nothing about labs.

Backends are found through one registry, so adding one is a class plus a line here: the CLI's
`--backend` choices, auto detection, cluster.json validation and the results' feature lookup all
read BACKENDS and AUTO_ORDER instead of comparing backend names.
"""

from __future__ import annotations

import importlib

from ..errors import CkalabError
from .base import Cluster, ClusterStatus, ComponentStatus

# name -> "module:Class", imported only when used (a cold `ckalab check` must not pay for kind).
BACKENDS = {
    "local": ".local:LocalCluster",
    "kind": ".kind:KindCluster",
}
# `auto` takes the first backend whose class says it is usable on this machine.
AUTO_ORDER = ("kind", "local")


def backend_class(name: str) -> type[Cluster]:
    if name not in BACKENDS:
        raise CkalabError(f"Unknown backend '{name}': choose {', '.join(['auto', *BACKENDS])}.")
    module, _, cls = BACKENDS[name].partition(":")
    return getattr(importlib.import_module(module, __name__), cls)


def features_of(name: str) -> frozenset[str]:
    """What a backend offers, by its name (as a results bundle records it); unknown offers nothing."""
    return backend_class(name).features if name in BACKENDS else frozenset()


def choose_backend(requested: str = "auto") -> str:
    """auto = the first backend of AUTO_ORDER usable here (kind needs `kind` and a Docker engine)."""
    if requested != "auto":
        backend_class(requested)  # an unknown name is a clear error
        return requested
    return next((n for n in AUTO_ORDER if backend_class(n).usable()), AUTO_ORDER[-1])


def get_cluster(name: str | None = None, backend: str | None = None) -> Cluster:
    """The cluster called `name`; its backend is the one it was created with unless given."""
    from .. import home
    from .base import read_cluster_state

    name = name or home.DEFAULT_CLUSTER
    if backend is None or backend == "auto":
        backend = read_cluster_state(name).get("backend") or choose_backend(backend or "auto")
    return backend_class(backend)(name)


__all__ = ["BACKENDS", "AUTO_ORDER", "Cluster", "ClusterStatus", "ComponentStatus", "backend_class",
           "features_of", "get_cluster", "choose_backend"]
