"""Programs the process tests run as children: ``python -m tests.procs.host`` / ``tests.procs.worker``.

Each child reports its progress as lines on stdout (``READY ...``, ``started ...``,
``STOPPED``), which the tests read with a bounded wait instead of sleeping.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def say(line: str) -> None:
    """Report one line to the parent test, at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def run_until_signal(stop_when_signal: Awaitable[None], timeout: float = 10.0) -> asyncio.Task[None]:
    """Start ``stop_when_signal`` in a task; return it once its signal handlers are installed.

    ``loop.add_signal_handler`` replaces the Python-level handler, so ``signal.getsignal``
    changes when (and only when) the runtime has installed its handlers. Until then a
    signal would kill the child, so the readiness line must wait for this.
    """
    before = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}
    task = asyncio.ensure_future(stop_when_signal)

    async def installed() -> None:
        while any(signal.getsignal(sig) == before[sig] for sig in STOP_SIGNALS):
            if task.done():
                task.result()
                raise RuntimeError("stop_when_signal returned before any signal was sent")
            await asyncio.sleep(0)

    await asyncio.wait_for(installed(), timeout)
    return task
