"""A worker's lasting link to its host: one connection at a time, reconnecting by a policy."""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass

from .._exceptions import (
    AuthenticationError,
    CallTimeoutError,
    HostConnectionError,
    HostShuttingDownError,
    TLSError,
)
from .connection import HostConnection

__all__ = ["HostLink", "ReconnectPolicy"]


@dataclass(frozen=True)
class ReconnectPolicy:
    """How a worker reconnects after losing its host: exponential backoff with jitter.

    The n-th attempt waits ``min(initial_delay * multiplier**(n-1), max_delay)`` seconds,
    spread by ±``jitter`` (a fraction) so that many workers do not all knock at once.
    Subclass it and override :meth:`delays` or :meth:`is_retryable` to change the rules.

    Args:
        initial_delay: Seconds before the first attempt.
        max_delay: Longest wait between attempts.
        multiplier: Growth of the wait from one attempt to the next.
        jitter: Fraction by which each wait is randomly lengthened or shortened.
        max_attempts: Give up after this many failed attempts; ``None`` never gives up.
    """

    initial_delay: float = 0.1
    max_delay: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.2
    max_attempts: int | None = None

    def delays(self) -> Iterator[float]:
        """The wait before each attempt, in seconds."""
        delay = min(self.initial_delay, self.max_delay)
        attempt = 0
        while self.max_attempts is None or attempt < self.max_attempts:
            attempt += 1
            yield max(0.0, delay * (1 + self.jitter * (2 * random.random() - 1)))
            delay = min(delay * self.multiplier, self.max_delay)

    def is_retryable(self, error: BaseException) -> bool:
        """Whether a failed attempt is worth another.

        Connection failures and a host that is shutting down are retried. Anything else
        is fatal: above all a refused re-registration (another worker took one of our
        agent types meanwhile), refused credentials (:class:`AuthenticationError`) and an
        untrusted certificate (:class:`TLSError`), which retrying cannot fix.
        """
        if isinstance(error, (AuthenticationError, TLSError)):
            return False
        return isinstance(error, (HostConnectionError, CallTimeoutError, HostShuttingDownError))


class _LinkState(enum.Enum):
    NEW = "not connected yet"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    LOST = "disconnected"
    CLOSED = "closed"


class HostLink:
    """Keeps a worker connected: connects once, and after a loss reconnects in the background.

    Args:
        connect: Opens a connection and re-registers the worker's agent types and
            subscriptions on it; it closes the connection itself if that fails.
        policy: How to reconnect; ``None`` does not reconnect.
        reconnect_timeout: Seconds a caller of :meth:`ready` waits while reconnecting.
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[HostConnection]],
        *,
        policy: ReconnectPolicy | None,
        reconnect_timeout: float,
        logger: logging.Logger,
    ) -> None:
        self._connect = connect
        self._policy = policy
        self._reconnect_timeout = reconnect_timeout
        self._log = logger
        self.connection: HostConnection | None = None
        self._state = _LinkState.NEW
        self._reason = "not connected yet"
        self._settled = asyncio.Event()  # set whenever the link is not reconnecting
        self._settled.set()
        self._closing = asyncio.Event()  # set by close()
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return (
            self._state is _LinkState.CONNECTED and self.connection is not None and not self.connection.closed
        )

    @property
    def reconnecting(self) -> bool:
        return self._state is _LinkState.RECONNECTING

    @property
    def usable(self) -> bool:
        """Connected, or reconnecting and so worth waiting for."""
        return self.connected or self.reconnecting

    async def open(self, wait: float = 0.0) -> None:
        """Connect for the first time.

        With ``wait`` 0 a failure is raised at once (``start()`` fails fast). Otherwise a
        failure the policy calls retryable is retried after the policy's backoff (the
        default policy's without one) for up to ``wait`` seconds, or as many attempts as the
        policy allows; the last failure is raised. :meth:`close` ends the wait.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        policy = self._policy or ReconnectPolicy()
        delays = policy.delays()
        attempts = 0
        while True:
            attempts += 1
            try:
                connection = await self._connect()
                break
            except Exception as exc:
                left = deadline - loop.time()
                delay = next(delays, None) if left > 0 and policy.is_retryable(exc) else None
                if delay is None or self._state is _LinkState.CLOSED:
                    if attempts > 1:
                        self._log.warning(
                            "Gave up waiting for the host after %d attempt(s): %s", attempts, exc
                        )
                    raise
                self._log.info(
                    "The host is not reachable yet (attempt %d): %s; retrying in %.1f s", attempts, exc, delay
                )
                try:  # the backoff itself, cut short by close()
                    await asyncio.wait_for(self._closing.wait(), min(delay, left))
                except asyncio.TimeoutError:
                    continue
                raise HostConnectionError("The runtime was stopped while waiting for the host.") from exc
        if self._state is _LinkState.CLOSED:
            await connection.close()
            raise HostConnectionError("The runtime was stopped while it was connecting.")
        self.connection = connection
        self._state = _LinkState.CONNECTED
        if attempts > 1:
            self._log.info("Reached the host after %d attempt(s)", attempts)

    def connection_lost(self, connection: HostConnection, reason: str) -> None:
        """Called when ``connection`` closed; starts reconnecting if the policy allows."""
        if connection is not self.connection or self._state is not _LinkState.CONNECTED:
            return
        self._reason = f"the connection to the host was lost ({reason})"
        if self._policy is None:
            self._state = _LinkState.LOST
            self._log.warning("Lost the connection to the host: %s", reason)
            return
        self._log.warning("Lost the connection to the host: %s; reconnecting", reason)
        self._state = _LinkState.RECONNECTING
        self._settled.clear()
        self._task = asyncio.create_task(self._reconnect(self._policy), name="autogen-http-reconnect")

    async def _reconnect(self, policy: ReconnectPolicy) -> None:
        attempts = 0
        for delay in policy.delays():
            await asyncio.sleep(delay)  # the backoff itself, not a synchronisation
            attempts += 1
            try:
                connection = await self._connect()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                if not policy.is_retryable(exc):
                    self._give_up(f"reconnecting failed and will not be retried: {exc}")
                    return
                self._log.info("Reconnection attempt %d failed: %s", attempts, exc)
                continue
            if self._state is not _LinkState.RECONNECTING:  # closed meanwhile
                await connection.close()
                return
            self.connection = connection
            self._state = _LinkState.CONNECTED
            self._settled.set()
            self._log.info("Reconnected to the host after %d attempt(s)", attempts)
            if connection.closed:  # lost again before we took it: its close went unheard
                self.connection_lost(connection, "closed right after reconnecting")
            return
        self._give_up(f"gave up reconnecting after {attempts} attempt(s); {self._reason}")

    def _give_up(self, reason: str) -> None:
        self._reason = reason
        self._state = _LinkState.LOST
        self._settled.set()
        self._log.error("Worker disconnected for good: %s", reason)

    async def ready(self, deadline: float | None = None) -> HostConnection:
        """The live connection; while reconnecting, wait up to ``reconnect_timeout`` for one,
        and no longer than ``deadline`` (a call's, in seconds).

        Raises:
            HostConnectionError: Not connected, and no connection came back in time.
            CallTimeoutError: Still reconnecting when ``deadline`` passed.
        """
        if self._state is _LinkState.RECONNECTING:
            bound = self._reconnect_timeout if deadline is None else min(deadline, self._reconnect_timeout)
            try:
                await asyncio.wait_for(self._settled.wait(), bound)
            except asyncio.TimeoutError:
                if bound < self._reconnect_timeout:
                    raise CallTimeoutError(
                        f"No answer within the call's deadline of {deadline} s: "
                        f"still reconnecting to the host ({self._reason})."
                    ) from None
                raise HostConnectionError(
                    f"Still reconnecting to the host after {self._reconnect_timeout} s: {self._reason}."
                ) from None
        connection = self.connection
        if not self.connected or connection is None:
            raise HostConnectionError(f"Not connected to the host: {self._reason}.")
        return connection

    async def close(self) -> None:
        """Stop reconnecting and close the connection. Idempotent."""
        self._state = _LinkState.CLOSED
        self._reason = "the runtime was stopped"
        self._settled.set()
        self._closing.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5.0)
        if self.connection is not None:
            await self.connection.close(1000, "worker stopping")
