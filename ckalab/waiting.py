"""One way to wait: poll a predicate until it is truthy or a deadline passes."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


class WaitTimeout(TimeoutError):
    pass


# Polls start every `interval` s and space out by this factor up to BACKOFF_CAP s: a short wait
# is seen as soon as before, a long one (an API server restarting, ~10 s) polls a third as often.
# Many polls run crictl or kubectl; with four test clusters on two cores they add up.
BACKOFF = 1.25
BACKOFF_CAP = 1.0


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.2,
             cap: float = BACKOFF_CAP) -> T:
    """Return the first truthy value of predicate(); raise WaitTimeout naming `what` after `timeout` s.
    Polls grow from `interval` to `cap` s apart (cap=interval: a fixed period).

    Exceptions from the predicate count as "not yet" so a component that is still starting
    (connection refused) does not abort the wait; the last one is reported on timeout.
    """
    deadline = time.monotonic() + timeout
    cap = max(interval, cap)
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - a starting component fails in many ways
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise WaitTimeout(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
        time.sleep(max(0.0, min(interval, deadline - time.monotonic())))
        interval = min(interval * BACKOFF, cap)
