"""What the other hosts of a cluster send this one, routed through the core's parts. No I/O.

Another host forwards here the requests, cancels and event copies for this host's
workers, and the answers to calls this host forwarded there (``_cluster/peers.py`` opens
the signed batches they come in). The host that took a call checked its caller's rights
and limits already: here it is only routed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from .._exceptions import ErrorCode
from .._protocol import wire
from .._protocol.wire import MessageError, Method
from .calls import CallTable
from .session import WorkerSession
from .stats import RouterStats

#: How every request and notification the core encodes starts (``wire.request``, ``wire.notification``).
_JSONRPC: Final = b'{"jsonrpc":'


class HostRelay:
    """Routes what arrives from other hosts.

    Args:
        sessions: The core's sessions, by id.
        here: This host's name in its cluster.
        reject: How the core answers a request with an error.
        complain: How the core logs a peer's misbehaviour (once at WARNING).
    """

    def __init__(
        self,
        sessions: dict[str, WorkerSession],
        calls: CallTable,
        stats: RouterStats,
        *,
        here: str,
        reject: Callable[[WorkerSession, MessageError, wire.Message | None], None],
        complain: Callable[..., None],
        logger: logging.Logger,
    ) -> None:
        self._sessions = sessions
        self._calls = calls
        self._stats = stats
        self._here = here
        self._reject = reject
        self._complain = complain
        self._log = logger
        #: How an event copy from another host reaches its worker (``EventFanOut.hand_over``).
        self.hand_over: Callable[[WorkerSession | None, bytes], None] = lambda target, data: None

    def to_worker(self, peer: WorkerSession, worker_id: str, data: bytes) -> None:
        """Route what another host sent for the worker ``worker_id`` of this one.

        ``peer`` stands for that host's callers (its ``remote`` names the host). ``data`` is
        one message: a request to forward, a cancel, or an event copy to deliver as it is.
        """
        target = self._sessions.get(worker_id)
        if target is not None and (target.local or not target.greeted or target.draining):
            target = None
        if not data.startswith(_JSONRPC):
            # An event copy, encoded by the other host for its recipient: delivered as it is.
            self.hand_over(target, data)
            return
        try:
            message = wire.decode(data)
        except MessageError as exc:
            self._complain(peer, "sent a frame that is not a message: %s", exc.message)
            return
        if isinstance(message, wire.Request):
            try:
                if target is None:
                    raise MessageError(
                        ErrorCode.WORKER_DISCONNECTED,
                        f"The worker serving the recipient ({worker_id}) left host {self._here} "
                        "before the call arrived.",
                        message.id,
                    )
                self._calls.relay(peer, message, target)
            except MessageError as exc:
                self._reject(peer, exc, message)
        elif isinstance(message, wire.Notification) and message.method == Method.CANCEL:
            self._calls.cancel(peer, message.params.get("id"))
        else:
            self._complain(peer, "sent a frame no host forwards: %r", type(message).__name__)

    def answer(self, host: str, data: bytes) -> None:
        """Relay an answer another host sent to a call this host forwarded there."""
        try:
            frame = wire.decode(data)
        except MessageError:
            frame = None
        if not isinstance(frame, (wire.Response, wire.ErrorResponse)):
            self._log.warning("Host %s sent something that is not an answer; dropped", host)
        elif not self._calls.answered_by_host(host, frame):
            self._log.debug("Dropped an answer from host %s to unknown id %r", host, frame.id)
