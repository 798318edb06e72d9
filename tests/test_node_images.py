"""The real nodes' control-plane images are built once per machine, also when several clusters
(four test workers on a fresh machine) start at once. Needs neither root nor a cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys

# One process of a machine's starting clusters: the archives' paths, inodes and image ids.
BUILD = """
import json, os, sys
from pathlib import Path
from ckalab.cluster.nodes import images
fake = Path(sys.argv[1])
bins = {c: fake / c for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "etcdctl")}
out = {}
for path, make in images.control_plane_archives(bins).items():
    name = make(path)
    out[name] = [str(path), os.stat(path).st_ino, images.archive_id(path)]
print(json.dumps(out))
"""


def test_clusters_starting_at_once_share_one_build_of_each_image(tmp_path):
    fake = tmp_path / "bin"  # stand-ins for the binaries: the build only copies them in
    fake.mkdir()
    for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd", "etcdctl"):
        (fake / name).write_bytes(os.urandom(4 << 20))
    env = {**os.environ, "CKALAB_BIN_CACHE": str(tmp_path / "cache")}
    runs = [subprocess.Popen([sys.executable, "-c", BUILD, str(fake)], env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(4)]
    said = [p.communicate(timeout=120) for p in runs]
    assert [p.returncode for p in runs] == [0] * 4, [err for _, err in said]
    seen = [json.loads(out) for out, _ in said]
    assert len(seen[0]) == 4  # kube-apiserver, kube-controller-manager, kube-scheduler, etcd
    assert all(s == seen[0] for s in seen), seen  # the same file (inode) and image: built once
    assert sorted(p.name for p in (tmp_path / "cache" / "images").glob("*.tar")) == sorted(
        os.path.basename(path) for path, _, _ in seen[0].values())
    assert not list((tmp_path / "cache" / "images").glob("*.tmp"))  # no temporary file left
