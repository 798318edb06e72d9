"""Where ckalab keeps its state: $CKALAB_HOME (default ~/.ckalab) and the binary cache.

Also the two ways state is changed safely when several ckalab commands run at once (a terminal,
a notebook kernel, a test run): an exclusive lock held around a read-modify-write, and atomic
writes (readers see the old file or the new one, never half of one; secrets are 0600 from birth).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from .errors import CkalabError

# libyaml's safe loader (PyYAML's wheels carry it) for the YAML ckalab reads often: with the
# pure-Python one, parsing lab.yaml files took about half of a test worker's CPU where every lab
# is loaded (an exam's choice, the teardowns a control-plane lab's reset looks for), and reading
# the static pod manifests while a restore waits about a fifth (py-spy under a CI run's load).
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

DEFAULT_CLUSTER = "ckalab"


def home() -> Path:
    """Root of all per-user state: clusters (PKI, kubeconfigs, logs, pids) and work dirs."""
    # Absolute: components run with the cluster directory as their working directory.
    return Path(os.environ.get("CKALAB_HOME") or Path.home() / ".ckalab").expanduser().absolute()


def cluster_dir(name: str = DEFAULT_CLUSTER) -> Path:
    return home() / "clusters" / name


def work_root() -> Path:
    return home() / "work"


def machine_dir() -> Path:
    """What every CKALAB_HOME of this user on the machine shares (the binaries, claimed ports)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ckalab"


def bin_cache() -> Path:
    """Built control-plane binaries, shared by every CKALAB_HOME on the machine (built once)."""
    if os.environ.get("CKALAB_BIN_CACHE"):
        return Path(os.environ["CKALAB_BIN_CACHE"]).expanduser()
    return machine_dir() / "bin"


# --- writing state ---------------------------------------------------------------------------

def write_atomic(path: Path, data: str | bytes, private: bool = False) -> None:
    """Replace `path` with `data` through a temporary file in the same directory.

    `private` files (keys, kubeconfigs with embedded credentials) are created with mode 0600,
    so there is no moment at which another user could open them; others get the usual 0666
    minus the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode() if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def replace_unless_edited(path: Path, data: str, original: Path, ours: Callable[[bytes], bool] = lambda b: False) -> bool:
    """Write `data` to `path` unless someone edited the version we wrote last (kept in
    `original`, which always gets `data`); a file `ours(content)` recognises is replaced too.
    True when an edit was kept: a learner's change of a node's file is never overwritten."""
    new = data.encode()
    before = original.read_bytes() if original.exists() else None
    write_atomic(original, new)
    try:
        now = path.read_bytes()
    except FileNotFoundError:
        now = None
    if now is not None and now != before and now != new and not ours(now):
        return True
    if now != new:
        write_atomic(path, new)
    return False


def read_state(path: Path, problem: Callable[[Any], str | None], recover: str) -> Any | None:
    """A JSON state file: None when it does not exist; its content when `problem(content)` finds
    nothing wrong; otherwise a CkalabError that names the file, what is wrong and `recover`."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise CkalabError(f"Cannot read the state file {path}: {reason}. {recover}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        what = "it is empty" if not text.strip() else f"it is not valid JSON ({exc})"
    else:
        what = problem(data)
        if what is None:
            return data
    raise CkalabError(f"The state file {path} is damaged: {what}. {recover}")


# --- locking ---------------------------------------------------------------------------------

def lock_timeout(default: float) -> float:
    """Seconds to wait for a lock: $CKALAB_LOCK_TIMEOUT when set (tests, impatient scripts)."""
    try:
        return float(os.environ["CKALAB_LOCK_TIMEOUT"])
    except (KeyError, ValueError):
        return default


def _holder(fd: int) -> str:
    """Who holds the lock, as the holder wrote it into the lock file."""
    try:
        rec = json.loads(os.pread(fd, 4096, 0) or b"{}")
        age = time.time() - float(rec["since"])
        return f"{rec['what']} (pid {int(rec['pid'])}, running for {age:.0f}s)"
    except (OSError, ValueError, KeyError, TypeError):
        return "another ckalab command"


@contextmanager
def locked(path: Path, what: str, timeout: float, progress: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive flock on `path` for the block; `what` tells waiters who holds it.

    flock belongs to the open file, so threads of one process exclude each other as processes
    do, and the kernel drops the lock when the holder dies (no stale lock after a crash). A
    waiter says once what it waits for, and gives up after `timeout` s naming the holder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            if progress:
                progress(f"Waiting for {holder} to finish (lock {path}) ...")
            deadline = time.monotonic() + timeout
            while True:
                time.sleep(0.1)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise CkalabError(f"Gave up after {timeout:.0f}s: {_holder(fd)} still holds {path}. "
                                          "Wait for it to finish, or stop it if it hangs.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "what": what, "since": time.time()}).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)  # a later waiter must not name a holder that has finished
    finally:
        os.close(fd)  # releases the lock


def update_json(path: Path, change: Callable[[Any], Any], problem: Callable[[Any], str | None],
                recover: str, what: str) -> Any:
    """Read-modify-write a JSON state file under its lock (path + '.lock'): concurrent updates
    all land. `change` gets the current content (None when missing) and returns the new one."""
    path = Path(path)
    with locked(path.with_name(path.name + ".lock"), what, lock_timeout(30)):
        new = change(read_state(path, problem, recover))
        write_atomic(path, json.dumps(new, indent=1))
    return new
