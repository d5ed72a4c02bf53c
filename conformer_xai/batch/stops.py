"""Named points where a dataset run can be made to stop itself, for tests that kill real runs.

With ``CONFORMER_XAI_STOP_AT=<name>[,<name>...]`` in its environment, a process sends itself
SIGSTOP the first time it reaches each named point, so that a test can kill it (SIGKILL, SIGINT
then SIGCONT) exactly there rather than after a guessed delay. Unset (always, outside tests),
a stop point costs one dictionary lookup. The points:

* ``create``: a store's arrays exist, its ``progress.json`` (the completion marker) does not.
* ``batch``: the first batch has been written and marked done (in the writer thread).
* ``merge-move``: the merged store's entries are in place, except its ``progress.json``.
* ``merge-remove``: the merge is finished and the first shard has been removed.
"""

from __future__ import annotations

import os
import signal

__all__ = ["stop_point", "ENV"]

ENV = "CONFORMER_XAI_STOP_AT"
_reached: set[str] = set()


def stop_point(name: str) -> None:
    """SIGSTOP this process if ``name`` is listed in ``$CONFORMER_XAI_STOP_AT`` (once)."""
    wanted = os.environ.get(ENV)
    if not wanted or name in _reached or name not in wanted.split(","):
        return
    _reached.add(name)
    os.kill(os.getpid(), signal.SIGSTOP)
