"""Reading files a learner wrote, with limits: graders must never hang or run out of memory on them.

A learner's work directory can hold anything: a FIFO (reading it blocks forever), a symlink to
/dev/zero (endless), a 200 MB file, or a few hundred bytes of YAML whose aliases expand to
gigabytes. Every grader reads learner files through here: only regular files, at most
MAX_BYTES, YAML without aliases and not nested without end, each file parsed once per content.
Problems come back as one clear LearnerFileError message per file.
"""

from __future__ import annotations

import copy
import os
import stat
from functools import lru_cache
from pathlib import Path

import yaml

from .errors import CkalabError

MAX_BYTES = 1_000_000  # far above any certificate, kubeconfig or answers file the labs ask for


class LearnerFileError(CkalabError):
    """A learner file that cannot be graded; the message says which file and what to do."""


def read_bytes(path: str | Path, max_bytes: int = MAX_BYTES, name: str | None = None) -> bytes:
    """The file's bytes; only a regular file (symlinks followed) of at most `max_bytes`."""
    p = Path(path)
    label = name or p.name
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise LearnerFileError(f"{label} not found (looked for {p}).") from None
    except OSError as exc:
        raise LearnerFileError(f"{label} cannot be read ({exc.strerror}): {p}.") from None
    if stat.S_ISDIR(st.st_mode):
        raise LearnerFileError(f"{label} is a directory, not a file: {p}.")
    if not stat.S_ISREG(st.st_mode):
        raise LearnerFileError(f"{label} is not a regular file (a pipe, device or socket): {p}. Write a plain file.")
    if st.st_size > max_bytes:
        raise LearnerFileError(f"{label} is {st.st_size:,} bytes, more than the {max_bytes:,}-byte limit for a lab "
                               f"file: {p}.")
    # O_NONBLOCK: should the path become a FIFO between stat and open, reading returns at once.
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise LearnerFileError(f"{label} cannot be read ({exc.strerror}): {p}.") from None
    try:
        with os.fdopen(fd, "rb") as f:  # at most one byte past the cap: /proc files report size 0
            data = f.read(max_bytes + 1)
    except OSError as exc:
        raise LearnerFileError(f"{label} cannot be read ({exc.strerror}): {p}.") from None
    if len(data) > max_bytes:
        raise LearnerFileError(f"{label} is more than the {max_bytes:,}-byte limit for a lab file: {p}.")
    return data


def read_text(path: str | Path, max_bytes: int = MAX_BYTES, name: str | None = None) -> str:
    label = name or Path(path).name
    try:
        return read_bytes(path, max_bytes, name).decode("utf-8")
    except UnicodeDecodeError:
        raise LearnerFileError(f"{label} is not UTF-8 text: {path}.") from None


class _NoAliases:
    """Refuse anchors and aliases: a few hundred bytes of aliases can expand into gigabytes
    (the "billion laughs"), and no lab file needs them."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _AliasFound(self.peek_event().start_mark)
        return super().compose_node(parent, index)


class _SafeNoAliases(_NoAliases, yaml.SafeLoader):
    pass


class _PlainNoAliases(_NoAliases, yaml.BaseLoader):
    """Every scalar stays the text the learner typed (1.20 is "1.20", yes is "yes")."""


class _AliasFound(Exception):
    def __init__(self, mark):
        super().__init__(mark)
        self.mark = mark


@lru_cache(maxsize=64)
def _parse(text: str, label: str, plain: bool):
    try:
        return yaml.load(text, Loader=_PlainNoAliases if plain else _SafeNoAliases)  # noqa: S506 - safe loaders
    except _AliasFound as exc:
        raise LearnerFileError(f"{label} uses YAML aliases (*name, line {exc.mark.line + 1}); write plain values "
                               "instead.") from None
    except RecursionError:
        raise LearnerFileError(f"{label} is nested too deeply to be a lab file.") from None


def parse_yaml(text: str, name: str, plain: bool = False):
    """Parse YAML a learner wrote. Aliases and runaway nesting raise LearnerFileError; a syntax
    error raises yaml.YAMLError so the grader can phrase it for its file. The same text is parsed
    once per process (every check reads the same answers file); each caller gets its own copy."""
    return copy.deepcopy(_parse(text, name, plain))


def yaml_error_text(exc: yaml.YAMLError, label: str) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
    problem = getattr(exc, "problem", None) or "not valid YAML"
    return f"{label} is not valid YAML{where}: {problem}."


def load_yaml(path: str | Path, max_bytes: int = MAX_BYTES, name: str | None = None, plain: bool = False):
    """Read and parse a learner's YAML file with every limit above; every problem is a
    LearnerFileError with one clear message."""
    label = name or Path(path).name
    try:
        return parse_yaml(read_text(path, max_bytes, label), label, plain)
    except yaml.YAMLError as exc:
        raise LearnerFileError(yaml_error_text(exc, label)) from None
