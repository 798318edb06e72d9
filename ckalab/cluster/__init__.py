"""Cluster backends behind one interface. The cluster layer knows nothing about labs."""

from .base import Cluster, ClusterStatus, ComponentStatus, get_cluster, choose_backend

__all__ = ["Cluster", "ClusterStatus", "ComponentStatus", "get_cluster", "choose_backend"]
