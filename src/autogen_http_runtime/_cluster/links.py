"""What a host's direct link to another is, for the cluster layer; the web layer makes them
(``_http/cluster_links.py``). No I/O."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol


class PeerLink(Protocol):
    """A direct connection to another host that carries the batches sent to it."""

    async def send(self, data: bytes) -> bool:
        """Send one sealed batch (waiting while the socket's buffer is full); ``False``: the
        link is closed, nothing was sent."""

    async def closed(self) -> str:
        """Wait until the link is closed; returns why."""

    @property
    def close_code(self) -> int | None:
        """The code the other host closed the link with, if it did: ``CLOSE_TRY_AGAIN_LATER``
        when it had lost the cluster (Redis), ``CLOSE_POLICY_VIOLATION`` when it refused a batch."""

    def close(self) -> None:
        """Close the link (what was sent goes out first)."""


#: Opens a direct link to ``host`` at ``url`` (bounded), or returns ``None`` (it logs why).
Dial = Callable[[str, str], Awaitable[PeerLink | None]]
