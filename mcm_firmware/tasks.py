"""Stopping asyncio tasks for sure.

On Python 3.11 ``asyncio.wait_for`` returns the result, and drops the cancellation, when the
awaited future completes in the same loop iteration as the cancel (CPython gh-86296, fixed in
3.12 by the rewrite of ``wait_for`` on ``asyncio.timeout``). Libraries await through it (aiomqtt
waits for a QoS 1 acknowledgement so), and a task that loops can then outlive its ``cancel()``
and ``gather`` waits forever. :func:`cancel_and_wait` cancels again until every task has ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

RETRY_S = 0.05  # how long a cancelled task gets before it is cancelled again


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]]) -> None:
    """Cancel the tasks and wait until all have ended (results and exceptions are dropped)."""
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    while pending:
        for t in pending:
            t.cancel()
        _, pending = await asyncio.wait(pending, timeout=RETRY_S)
    for t in tasks:  # retrieved, so that the loop does not log them as never retrieved
        if not t.cancelled():
            t.exception()


def cancelled_under_way() -> bool:
    """Whether a cancel of the running task is pending though its await returned normally."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
