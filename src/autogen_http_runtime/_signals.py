"""Signal handling that gives the handlers back."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Iterator, Sequence


@contextlib.contextmanager
def signals_received(signals: Sequence[signal.Signals]) -> Iterator[asyncio.Event]:
    """Install handlers that set an event on any of ``signals``; restore the previous ones on exit."""
    loop = asyncio.get_running_loop()
    received = asyncio.Event()
    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:
        loop.add_signal_handler(sig, received.set)
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            loop.remove_signal_handler(sig)
            if handler is not None:
                signal.signal(sig, handler)
