"""Errors that carry a message meant for the learner: what went wrong and what to do next."""


class CkalabError(Exception):
    """A problem the learner or instructor can fix; the CLI prints it without a traceback."""


class ClusterNotRunning(CkalabError):
    """The lab's cluster is not up (or not reachable)."""
