"""Ending the cluster's background tasks, which talk to Redis."""

from __future__ import annotations

import asyncio


async def cancel_tasks(tasks: list[asyncio.Task[None]], timeout: float) -> None:
    """Cancel ``tasks`` and wait (up to ``timeout`` seconds a round) until they end.

    A task is cancelled again while it goes on: redis-py can turn a cancellation that comes
    as its own command timeout expires into a ``TimeoutError``, which a loop that outlives
    Redis outages takes for one, and carries on.
    """
    pending = {task for task in tasks if not task.done()}
    for _ in range(3):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=timeout)
    for task in tasks:
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a loop that failed was logged where it failed
