"""Images for real nodes, built here as OCI archives: no registry is reachable from our machines.

Each image carries its upstream name, so pods (and containerd's sandbox setting) name them as
on any cluster; pods must use imagePullPolicy IfNotPresent or Never, as nothing can be pulled.

- docker.io/library/busybox:<Debian's version>: Debian's busybox-static, one symlink per
  applet, a passwd/group with root and nobody, and our clockprobe (see noclock.py).
- registry.k8s.io/pause:<PAUSE_TAG>: our pause binary (gomod/nodeimages), as user 65535.

Layers are uncompressed tars with fixed times and owners, so the same inputs give the same
digests (a rebuilt archive does not grow containerd's content store).
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Callable

from ...errors import CkalabError

PAUSE_TAG = "3.10.1"  # what containerd 2.2 and kubelet 1.36 expect as the sandbox image
PAUSE_IMAGE = f"registry.k8s.io/pause:{PAUSE_TAG}"
BUSYBOX = Path("/bin/busybox")
PASSWD = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
GROUP = "root:x:0:\nnobody:x:65534:\n"


def busybox_version() -> str:
    """Debian's busybox-static version, e.g. 1.35.0 (the tag of our busybox image)."""
    if not BUSYBOX.is_file():
        raise CkalabError(f"{BUSYBOX} is missing: real nodes build their busybox image from Debian's "
                          "busybox-static package (apt-get install busybox-static).")
    first = subprocess.run([str(BUSYBOX)], capture_output=True, text=True).stdout.splitlines()[:1]
    # "BusyBox v1.35.0 (Debian 1:1.35.0-4+b3) multi-call binary."
    words = first[0].split() if first else []
    return words[1].lstrip("v") if len(words) > 1 else "1"


def busybox_image() -> str:
    return f"docker.io/library/busybox:{busybox_version()}"


class _Layer:
    """An uncompressed, reproducible layer tar built in memory."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def _info(self, name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime, info.uid, info.gid = kind, mode, 0, 0, 0
        return info

    def dir(self, name: str, mode: int = 0o755) -> None:
        self.tar.addfile(self._info(name, tarfile.DIRTYPE, mode))

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self.tar.addfile(info, io.BytesIO(data))

    def link(self, name: str, target: str) -> None:
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self.tar.addfile(info)

    def close(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def oci_archive(path: Path, name: str, layer: bytes, config: dict) -> None:
    """Write an OCI image layout tar holding one single-layer linux/amd64 image called `name`.

    The name is also a label of the image's config, so images built from the same files (busybox,
    ubuntu and nginx all run Debian's busybox) still differ in ID, as upstream's do. With one ID,
    the kubelet (1.35+, KubeletEnsureSecretPulledImages) counted `busybox:1.35.0`, imported here,
    as pulled once it had pulled `ubuntu:latest` for a lab, and refused it to pods with
    `imagePullPolicy: Never` (ErrImageNeverPull)."""
    config = {**config, "Labels": {**config.get("Labels", {}), "org.opencontainers.image.title": name}}
    image_config = {
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        "history": [{"created_by": "ckalab (built from local files; no registry)"}],
    }
    config_blob = json.dumps(image_config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _digest(config_blob), "size": len(config_blob)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _digest(layer), "size": len(layer)}],
    }
    manifest_blob = json.dumps(manifest, sort_keys=True).encode()
    index = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": _digest(manifest_blob), "size": len(manifest_blob),
            "platform": {"architecture": "amd64", "os": "linux"},
            # ctr import names the image after this annotation.
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]},
        }],
    }
    out = _Layer()
    out.file("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
    out.file("index.json", json.dumps(index, sort_keys=True).encode())
    out.dir("blobs")
    out.dir("blobs/sha256")
    for blob in (layer, config_blob, manifest_blob):
        out.file(f"blobs/sha256/{_digest(blob).split(':')[1]}", blob)
    from ... import home

    home.write_atomic(path, out.close())  # a temporary file of its own: builders may run at once


def _base(layer: _Layer) -> None:
    for d in ("bin", "dev", "etc", "proc", "sys", "root"):
        layer.dir(d)
    layer.dir("tmp", 0o1777)
    layer.file("etc/passwd", PASSWD.encode())
    layer.file("etc/group", GROUP.encode())


def build_busybox(path: Path, clockprobe: Path) -> str:
    name = busybox_image()
    layer = _busybox_layer(clockprobe)
    oci_archive(path, name, layer.close(), {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], "Cmd": ["sh"]})
    return name


def build_pause(path: Path, pause: Path) -> str:
    layer = _Layer()
    _base(layer)
    layer.file("pause", pause.read_bytes(), 0o755)
    oci_archive(path, PAUSE_IMAGE, layer.close(), {"Entrypoint": ["/pause"], "User": "65535:65535"})
    return PAUSE_IMAGE


# --- the control plane's images, from the binaries ckalab builds -----------------------------------
# Names and tags as kubeadm 1.36 pulls them, so the static pod manifests read as on any cluster.
ETCD_TAG = "3.6.16-0"


def control_plane_images(bins: dict[str, Path]) -> dict[str, list[Path]]:
    from ..local import build

    images = {f"registry.k8s.io/{c}:{build.K8S_VERSION}": [bins[c]]
              for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")}
    images[f"registry.k8s.io/etcd:{ETCD_TAG}"] = [bins["etcd"], bins["etcdctl"]]
    return images


# The API server restarts at every manifest edit, and the control-plane labs (and their tests)
# edit it often: with the Go collector's target at 400 % instead of 100 % a start took about a
# fifth less CPU on a 2-core machine, for about 120 MiB more resident memory (docs/real-nodes.md).
IMAGE_ENV = {"kube-apiserver": ["GOGC=400"]}
# Part of the cached archives' names: a new revision of what goes into them builds them afresh.
IMAGES_REV = "r2"


def build_binaries_image(path: Path, name: str, binaries: list[Path], env: list[str] = ()) -> str:
    """One layer: the base files and each binary in /usr/local/bin (on PATH)."""
    layer = _Layer()
    _base(layer)
    for d in ("usr", "usr/local", "usr/local/bin", "var", "var/lib", "var/log"):
        layer.dir(d)
    for b in binaries:
        layer.file(f"usr/local/bin/{b.name}", b.read_bytes(), 0o755)
    oci_archive(path, name, layer.close(), {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", *env]})
    return name


def control_plane_archives(bins: dict[str, Path]) -> dict[Path, Callable[[Path], str]]:
    """archive path -> builder, cached per machine (the binaries are large: build once)."""
    from ... import home

    out: dict[Path, Callable[[Path], str]] = {}
    for name, binaries in control_plane_images(bins).items():
        repo_tag = name.rsplit("/", 1)[1]
        path = home.bin_cache() / "images" / f"{repo_tag.replace(':', '_')}.{IMAGES_REV}.tar"
        env = IMAGE_ENV.get(repo_tag.split(":")[0], [])

        def make(p: Path, name=name, binaries=binaries, env=env) -> str:
            def stale() -> bool:
                return not p.exists() or any(b.stat().st_mtime > p.stat().st_mtime for b in binaries)

            if stale():
                # One build per machine: four test workers on a fresh machine each built it at
                # once, through one temporary file, and three found it moved away.
                with home.locked(p.with_suffix(".lock"), f"building image {name}", timeout=600):
                    if stale():
                        build_binaries_image(p, name, binaries, env)
            return name
        out[path] = make
    return out


def archive_id(path: Path) -> str:
    """The digest of the image an archive holds (its index.json), to skip an import already done."""
    with tarfile.open(path) as tar:
        for member in tar:
            if member.name == "index.json":
                return _digest(tar.extractfile(member).read())
    return ""


# --- the labs' images, served by the cluster's registry (nodes pull them as from upstream) --------
# Same names as upstream, so the labs' manifests run unchanged on kind, where they are pulled.
# Stand-ins where upstream's is a distribution we cannot fetch: "ubuntu" and "nginx" are
# Debian's busybox-static with the programs the labs use (sleep, id, sh; httpd serving port 80).
NGINX_INDEX = b"<html><body><h1>Welcome to nginx (ckalab stand-in: busybox httpd)</h1></body></html>\n"


def _busybox_layer(clockprobe: Path) -> _Layer:
    layer = _Layer()
    _base(layer)
    layer.file("bin/busybox", BUSYBOX.read_bytes(), 0o755)
    applets = subprocess.run([str(BUSYBOX), "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in sorted(set(applets) - {"busybox"}):
        layer.link(f"bin/{applet}", "busybox")
    layer.file("bin/clockprobe", clockprobe.read_bytes(), 0o755)
    kubecall = clockprobe.parent / "kubecall"  # same group (gomod/nodeimages)
    if kubecall.exists():
        layer.file("bin/kubecall", kubecall.read_bytes(), 0o755)
    return layer


def manifest_digest(path: Path) -> str:
    """The digest of the image manifest an archive holds: what a registry reports for its tag."""
    with tarfile.open(path) as tar:
        for member in tar:
            if member.name == "index.json":
                return json.loads(tar.extractfile(member).read())["manifests"][0]["digest"]
    return ""


def lab_image_inputs(bins: dict[str, Path]) -> list[Path]:
    """What the labs' images are made of: an archive older than any of them is rebuilt."""
    return [BUSYBOX, bins["clockprobe"], bins["clockprobe"].parent / "kubecall", bins["agnhost"], Path(__file__)]


def upstream_name(repo: str) -> str:
    """docker.io/library/ubuntu:latest for library/ubuntu:latest (registry.k8s.io's are nested)."""
    return f"registry.k8s.io/{repo}" if repo.startswith("e2e-test-images/") else f"docker.io/{repo}"


def lab_images(bins: dict[str, Path]) -> dict[str, Callable[[Path], str]]:
    """registry path (name without the upstream host) -> builder of its archive."""
    path_env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]

    def busybox_as(name: str, config: dict, extra=None):
        def make(p: Path) -> str:
            layer = _busybox_layer(bins["clockprobe"])
            if extra:
                extra(layer)
            oci_archive(p, name, layer.close(), {"Env": path_env, **config})
            return name
        return make

    def nginx_files(layer: _Layer) -> None:
        for d in ("usr", "usr/share", "usr/share/nginx", "usr/share/nginx/html"):
            layer.dir(d)
        layer.file("usr/share/nginx/html/index.html", NGINX_INDEX)

    def agnhost(p: Path) -> str:
        name = "registry.k8s.io/e2e-test-images/agnhost:2.53"
        layer = _Layer()
        _base(layer)
        layer.file("agnhost", bins["agnhost"].read_bytes(), 0o755)
        oci_archive(p, name, layer.close(), {"Env": path_env, "Entrypoint": ["/agnhost"]})
        return name

    # registry path -> builder; the upstream name is the registry host plus that path.
    return {
        "library/busybox:1.36": busybox_as("docker.io/library/busybox:1.36", {"Cmd": ["sh"]}),
        "library/busybox:latest": busybox_as("docker.io/library/busybox:latest", {"Cmd": ["sh"]}),
        "library/ubuntu:latest": busybox_as("docker.io/library/ubuntu:latest", {"Cmd": ["sh"]}),
        "library/nginx:latest": busybox_as(
            "docker.io/library/nginx:latest",
            # nginx stops at SIGTERM; busybox httpd as PID 1 would ignore it (the kernel drops
            # signals PID 1 has no handler for) and every delete would wait out the grace period.
            {"Cmd": ["sh", "-c", "httpd -f -p 80 -h /usr/share/nginx/html & trap 'exit 0' TERM INT; wait"],
             "ExposedPorts": {"80/tcp": {}}},
            nginx_files),
        "e2e-test-images/agnhost:2.53": agnhost,
    }
