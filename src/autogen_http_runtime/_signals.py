"""Signal handling for ``stop_when_signal()``: shared within a process, and given back afterwards.

A host and a worker may wait for the same signal in one process. Each signal gets one
event-loop handler while anybody waits for it; the handler wakes every waiter. When the
last waiter leaves, whatever was installed before comes back: a plain ``signal.signal``
handler, or a handler the application had added to the event loop itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ._compat import loop_signal_handler

_waiters: dict[signal.Signals, list[asyncio.Event]] = {}
#: The previous ``signal.signal`` handler and the previous event-loop handle, per signal.
_previous: dict[signal.Signals, tuple[Any, tuple[Callable[..., Any], tuple[Any, ...]] | None]] = {}


@contextlib.contextmanager
def signals_received(signals: Sequence[signal.Signals]) -> Iterator[asyncio.Event]:
    """An event set when any of ``signals`` arrives, for the duration of the block."""
    loop = asyncio.get_running_loop()
    wanted = list(dict.fromkeys(signals))
    received = asyncio.Event()
    for sig in wanted:
        waiters = _waiters.setdefault(sig, [])
        if not waiters:
            _previous[sig] = (signal.getsignal(sig), loop_signal_handler(loop, sig))
            loop.add_signal_handler(sig, _wake, sig)
        waiters.append(received)
    try:
        yield received
    finally:
        for sig in wanted:
            waiters = _waiters[sig]
            waiters.remove(received)
            if waiters:
                continue
            del _waiters[sig]
            handler, loop_handle = _previous.pop(sig)
            loop.remove_signal_handler(sig)
            if loop_handle is not None:
                callback, args = loop_handle
                loop.add_signal_handler(sig, callback, *args)
            elif handler is not None:
                signal.signal(sig, handler)


def _wake(sig: signal.Signals) -> None:
    for event in _waiters.get(sig, ()):
        event.set()
