"""A worker's life: start, the link to its host while it runs, and an orderly stop."""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Any

from .._exceptions import HostConnectionError, RpcError
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
    STOPPED = "stopped"


class Lifecycle:
    """Starts and stops one worker, and hands out its live connection meanwhile.

    Args:
        host_address: The address the user gave, for messages.
        control_timeout: Seconds to wait for the host to answer a control request.
        reconnect: How to reconnect after losing the host; ``None`` does not reconnect.
        reconnect_timeout: Seconds a caller waits for the connection while reconnecting.
    """

    def __init__(
        self,
        host_address: str,
        options: ConnectionOptions,
        inbound: Inbound,
        registrations: Registrations,
        *,
        control_timeout: float,
        reconnect: ReconnectPolicy | None,
        reconnect_timeout: float,
        logger: logging.Logger,
    ) -> None:
        self._host_address = host_address
        self.options = options
        self._inbound = inbound
        self._registrations = registrations
        self._control_timeout = control_timeout
        self._log = logger
        self._handlers = ConnectionHandlers(
            request=inbound.request, cancel=inbound.cancel, event=inbound.event, closed=self._on_closed
        )
        self.link = HostLink(
            self._connect_and_register, policy=reconnect, reconnect_timeout=reconnect_timeout, logger=logger
        )
        self.state = WorkerState.NEW
        self._stopping: asyncio.Future[None] | None = None

    async def start(self) -> None:
        """See ``HttpWorkerAgentRuntime.start``."""
        if self.state is not WorkerState.NEW:
            raise RuntimeError(f"The runtime cannot start: it is {self.state.value}.")
        self.state = WorkerState.STARTING
        try:
            await self.link.open()
        except BaseException:
            if self.state is WorkerState.STARTING:
                self.state = WorkerState.NEW
            raise
        self.state = WorkerState.RUNNING
        connection = self.link.connection
        assert connection is not None
        self._log.info("Worker connected to %s as %s", self.options.endpoint.ws_url, connection.worker_id)

    async def _connect_and_register(self) -> HostConnection:
        """Open a connection and (re-)register every agent type and subscription on it."""
        connection = await HostConnection.open(self.options, self._handlers, self._log)
        try:
            if self.state is WorkerState.STOPPED:
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
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._shutdown())
        await asyncio.shield(self._stopping)

    async def _shutdown(self) -> None:
        self.state = WorkerState.STOPPED
        if self._registrations.replicated:
            replicated = ", ".join(sorted(self._registrations.replicated))
            self._log.info("Leaving the replica set of agent type(s) %s", replicated)
        connection = self.link.connection
        if self.link.connected and connection is not None:
            try:
                await connection.call(Method.BYE, {}, timeout=min(self._control_timeout, 5.0))
            except (HostConnectionError, RpcError):
                pass  # the host is gone or too old to know 'bye': closing the socket frees us too
        await self.link.close()
        await self._inbound.stop()
        self._log.info("Worker stopped")

    def _on_closed(self, connection: HostConnection, reason: str) -> None:
        self._inbound.connection_closed(connection)
        if self.state is not WorkerState.STOPPED:
            self.link.connection_lost(connection, reason)

    async def ready(self) -> HostConnection:
        """The live connection, waiting while the link reconnects.

        Raises:
            HostConnectionError: The runtime is not running or the host cannot be reached.
        """
        if self.state is not WorkerState.RUNNING:
            raise HostConnectionError(
                f"The runtime is {self.state.value}; it must be running (connected to "
                f"{self._host_address}) to send or publish messages."
            )
        return await self.link.ready()

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
        if self.state is WorkerState.STOPPED or (self.state is WorkerState.RUNNING and not self.link.usable):
            raise HostConnectionError(
                f"The runtime is {'stopped' if self.state is WorkerState.STOPPED else 'disconnected'}: "
                "the host cannot be told of this change."
            )
        return self.state is WorkerState.RUNNING

    def live_connection(self) -> HostConnection | None:
        """The connection, if the link is connected now."""
        return self.link.connection if self.link.connected else None
