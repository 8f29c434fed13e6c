"""A worker's life: start, the link to its host while it runs, and an orderly stop."""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Sequence
from typing import Any

from .._exceptions import (
    AuthenticationError,
    CallTimeoutError,
    ErrorCode,
    HostConnectionError,
    HostShuttingDownError,
    RpcError,
    TLSError,
)
from .._protocol.address import HostEndpoint
from .._protocol.wire import JsonObject, Method
from .connection import ConnectionHandlers, HostConnection
from .dialing import ConnectionOptions
from .inbound import Inbound
from .link import HostLink, ReconnectPolicy
from .registrations import Registrations


class WorkerState(enum.Enum):
    NEW = "not started"
    STARTING = "starting"
    RUNNING = "running"
    #: Between ``drain`` and ``bye``: the handlers running finish, and may still call out.
    STOPPING = "stopping"
    STOPPED = "stopped"


class Lifecycle:
    """Starts and stops one worker, and hands out its live connection meanwhile.

    Args:
        host_address: The address the user gave, for messages.
        options: How to connect; with several ``endpoints``, each connection attempt tries
            them in turn, starting after the host last connected to.
        control_timeout: Seconds to wait for the host to answer a control request.
        reconnect: How to reconnect after losing the host; ``None`` does not reconnect.
        reconnect_timeout: Seconds a caller waits for the connection while reconnecting.
        wait_for_host: Seconds ``start()`` retries a host it cannot reach; 0 fails at once.
        stop_grace: Seconds ``stop()`` lets the handlers running finish and answer.
    """

    def __init__(
        self,
        host_address: str | Sequence[str],
        options: ConnectionOptions,
        inbound: Inbound,
        registrations: Registrations,
        *,
        control_timeout: float,
        reconnect: ReconnectPolicy | None,
        reconnect_timeout: float,
        wait_for_host: float,
        stop_grace: float,
        logger: logging.Logger,
    ) -> None:
        self._host_address = host_address if isinstance(host_address, str) else ", ".join(host_address)
        self.options = options
        self._inbound = inbound
        self._registrations = registrations
        self._control_timeout = control_timeout
        self._wait_for_host = _seconds("wait_for_host", wait_for_host)
        self._stop_grace = _seconds("stop_grace", stop_grace)
        self._log = logger
        self._handlers = ConnectionHandlers(
            request=inbound.request, cancel=inbound.cancel, event=inbound.event, closed=self._on_closed
        )
        self.link = HostLink(
            self._connect_and_register, policy=reconnect, reconnect_timeout=reconnect_timeout, logger=logger
        )
        #: Which of ``options.endpoints`` the next connection attempt tries first.
        self._next_endpoint = 0
        self.state = WorkerState.NEW
        self._stopping: asyncio.Future[None] | None = None
        #: The tasks awaiting stop(): a handler among them must not be waited for.
        self._stoppers: set[asyncio.Task[Any]] = set()

    async def start(self, wait_for_host: float | None = None) -> None:
        """See ``HttpWorkerAgentRuntime.start``."""
        wait = self._wait_for_host if wait_for_host is None else _seconds("wait_for_host", wait_for_host)
        if self.state is not WorkerState.NEW:
            raise RuntimeError(f"The runtime cannot start: it is {self.state.value}.")
        self.state = WorkerState.STARTING
        try:
            await self.link.open(wait)
        except BaseException:
            if self.state is WorkerState.STARTING:
                self.state = WorkerState.NEW
            raise
        self.state = WorkerState.RUNNING
        connection = self.link.connection
        assert connection is not None
        self._log.info("Worker connected to %s as %s", connection.endpoint.ws_url, connection.worker_id)

    async def _connect_and_register(self) -> HostConnection:
        """Connect to one of the hosts and (re-)register every agent type and subscription.

        Tries each host once, in order, starting after the one last connected to (which is
        likely the one just lost). A host that cannot be reached, is shutting down or does not
        answer moves on to the next; anything else (a conflicting registration, say) is the
        same answer from every host of one cluster and is raised at once.
        """
        endpoints = self.options.endpoints
        failures: list[tuple[str, BaseException]] = []
        for step in range(len(endpoints)):
            index = (self._next_endpoint + step) % len(endpoints)
            try:
                connection = await self._connect_to(endpoints[index])
            except (HostConnectionError, HostShuttingDownError, CallTimeoutError) as exc:
                if len(endpoints) == 1 or self.state in (WorkerState.STOPPING, WorkerState.STOPPED):
                    raise
                failures.append((endpoints[index].ws_url, exc))
                continue
            self._next_endpoint = (index + 1) % len(endpoints)
            return connection
        fatal = next((exc for _, exc in failures if isinstance(exc, (AuthenticationError, TLSError))), None)
        if fatal is not None:
            raise fatal
        said = "; ".join(f"{url}: {exc}" for url, exc in failures)
        raise HostConnectionError(
            f"Cannot connect to any of the {len(failures)} hosts: {said}"
        ) from failures[-1][1]

    async def _connect_to(self, endpoint: HostEndpoint) -> HostConnection:
        connection = await HostConnection.open(self.options, endpoint, self._handlers, self._log)
        try:
            if self.state in (WorkerState.STOPPING, WorkerState.STOPPED):
                raise HostConnectionError("The runtime was stopped while it was connecting.")
            await self._registrations.replay(connection, first=self.state is WorkerState.STARTING)
        except BaseException:
            await connection.close(1000, "registration failed")
            raise
        return connection

    async def stop(self) -> None:
        """See ``HttpWorkerAgentRuntime.stop``."""
        if self.state is WorkerState.NEW:
            return
        caller = asyncio.current_task()
        if caller is not None:
            self._stoppers.add(caller)
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._shutdown())
        try:
            await asyncio.shield(self._stopping)
        finally:
            self._stoppers.discard(caller)

    async def _shutdown(self) -> None:
        connection = self.link.connection if self.link.connected else None
        if self.state is WorkerState.RUNNING and connection is not None:
            self.state = WorkerState.STOPPING
            if await self._drain(connection):
                await self._inbound.finish(connection, self._stop_grace, self._stoppers)
        self.state = WorkerState.STOPPED
        if self._registrations.replicated:
            replicated = ", ".join(sorted(self._registrations.replicated))
            self._log.info("Leaving the replica set of agent type(s) %s", replicated)
        if self.link.connected and connection is not None:
            try:
                await connection.call(Method.BYE, {}, timeout=min(self._control_timeout, 5.0))
            except (HostConnectionError, RpcError):
                pass  # the host is gone or too old to know 'bye': closing the socket frees us too
        await self.link.close()
        await self._inbound.stop()
        self._log.info("Worker stopped")

    async def _drain(self, connection: HostConnection) -> bool:
        """Ask the host to route nothing new here; False if it will not (it is gone, or too old
        to know ``drain``)."""
        try:
            await connection.call(Method.DRAIN, {}, timeout=min(self._control_timeout, 5.0))
        except RpcError as exc:
            if exc.code == ErrorCode.METHOD_NOT_FOUND:
                self._log.info(
                    "The host does not know 'drain' (an older host): stopping without a grace period"
                )
            else:
                self._log.warning("The host refused 'drain' (%s): stopping without a grace period", exc)
            return False
        except HostConnectionError:
            return False
        return True

    def _on_closed(self, connection: HostConnection, reason: str) -> None:
        self._inbound.connection_closed(connection)
        if self.state not in (WorkerState.STOPPING, WorkerState.STOPPED):  # no reconnecting to stop
            self.link.connection_lost(connection, reason)

    async def ready(self, deadline: float | None = None) -> HostConnection:
        """The live connection, waiting while the link reconnects (see ``WorkerLink.ready``).

        Raises:
            HostConnectionError: The runtime is not running or the host cannot be reached.
            CallTimeoutError: Still reconnecting when ``deadline`` (seconds) passed.
        """
        if self.state not in (WorkerState.RUNNING, WorkerState.STOPPING):
            raise HostConnectionError(
                f"The runtime is {self.state.value}; it must be running (connected to "
                f"{self._host_address}) to send or publish messages."
            )
        return await self.link.ready(deadline)

    async def control(self, method: str, params: JsonObject) -> Any:
        """Send a control request on the live connection and return its result."""
        connection = await self.ready()
        return await connection.call(method, params, timeout=self._control_timeout)

    def host_must_hear(self) -> bool:
        """Whether a registration made now goes to the host before returning.

        Before start(), it waits for start(); during start() the registration loop sends it.

        Raises:
            HostConnectionError: The runtime is stopped or has lost its host for good.
        """
        if self.state in (WorkerState.STOPPING, WorkerState.STOPPED) or (
            self.state is WorkerState.RUNNING and not self.link.usable
        ):
            state = "disconnected" if self.state is WorkerState.RUNNING else self.state.value
            raise HostConnectionError(f"The runtime is {state}: the host cannot be told of this change.")
        return self.state is WorkerState.RUNNING

    def live_connection(self) -> HostConnection | None:
        """The connection, if the link is connected now."""
        return self.link.connection if self.link.connected else None


def _seconds(name: str, value: float) -> float:
    """A duration setting, checked: a number of seconds >= 0 (``math.inf`` allowed)."""
    if not value >= 0:  # NaN fails this too
        raise ValueError(f"{name} must be a number of seconds >= 0, not {value!r}.")
    return float(value)
