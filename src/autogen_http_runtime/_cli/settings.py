"""``autogen-http-runtime serve``: its settings and what it runs.

Every setting comes from, in order of precedence: a command-line option, an environment
variable named ``AUTOGEN_HTTP_`` plus the setting's name in capitals (``AUTOGEN_HTTP_PORT``),
or the default. ``_cli.py`` only maps options onto :class:`ServeSettings`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .._constants import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_GRACE,
    DEFAULT_HOST,
    DEFAULT_MAX_CALLS_IN_FLIGHT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_QUEUED_BYTES,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    DEFAULT_PORT,
    DEFAULT_SLOW_CONSUMER_TIMEOUT,
)
from .._host.security import AccessPolicy, Authenticator, BearerTokens, RateLimit
from .._http.admission import DEFAULT_PUBLIC_ROUTES
from .._http.server import HttpAgentServer
from .._http.service import HttpAgentService
from .._logging import LogFormat

ENV_PREFIX = "AUTOGEN_HTTP_"

LogLevel = Literal["critical", "error", "warning", "info", "debug"]
EventLoop = Literal["auto", "asyncio", "uvloop"]


class ServeSettings(BaseSettings):
    """The host's settings; each also read from ``AUTOGEN_HTTP_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True)

    host: str = Field(DEFAULT_HOST, description="interface to bind; 0.0.0.0 for every IPv4 interface")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="port to listen on; 0 picks a free one")
    loop: EventLoop = Field("auto", description="event loop: uvloop when installed (auto), or asyncio")
    log_level: LogLevel = Field("info", description="level of the host's log lines")
    log_format: LogFormat = Field("text", description="text, or json for one JSON object per line")

    # uvicorn's TLS settings, under uvicorn's names; passed through as they are.
    ssl_keyfile: Optional[str] = Field(None, description="TLS private key file (PEM)")
    ssl_certfile: Optional[str] = Field(
        None, description="TLS certificate chain file (PEM); enables HTTPS/WSS"
    )
    ssl_keyfile_password: Optional[str] = Field(None, description="password of the key file")
    ssl_version: Optional[int] = Field(
        None, description="ssl module protocol constant (uvicorn's default: TLS server)"
    )
    ssl_cert_reqs: Optional[int] = Field(
        None, description="client certificates: 0 none, 1 optional, 2 required (uvicorn's default: 0)"
    )
    ssl_ca_certs: Optional[str] = Field(None, description="CA bundle to verify client certificates with")
    ssl_ciphers: Optional[str] = Field(None, description="OpenSSL cipher list (uvicorn's default: TLSv1)")

    # Security (docs/security.md).
    tokens: Optional[str] = Field(
        None, description="bearer tokens as name=token pairs, comma-separated; turns on authentication"
    )
    tokens_file: Optional[str] = Field(None, description="file of name=token lines; turns on authentication")
    access_policy: Optional[str] = Field(
        None, description="JSON file of per-identity rules: what each may register, call, publish, subscribe"
    )
    public_routes: str = Field(
        ",".join(DEFAULT_PUBLIC_ROUTES), description="comma-separated routes that need no token"
    )
    rate_limit: Optional[float] = Field(
        None, gt=0, description="calls and publishes per second per identity; 'none' for no limit"
    )
    rate_burst: Optional[int] = Field(
        None, ge=1, description="calls and publishes an identity may make at once (default: 2 x rate)"
    )
    max_connections: Optional[int] = Field(None, ge=1, description="worker connections the host keeps open")

    max_message_size: int = Field(
        DEFAULT_MAX_MESSAGE_SIZE, ge=1024, description="largest WebSocket message in bytes, both ways"
    )
    max_queued_bytes: int = Field(
        DEFAULT_MAX_QUEUED_BYTES,
        ge=1,
        description="bytes queued for one worker before it is dropped as too slow",
    )
    max_calls_in_flight: int = Field(
        DEFAULT_MAX_CALLS_IN_FLIGHT, ge=1, description="calls one worker may have in flight"
    )
    slow_consumer_timeout: float = Field(
        DEFAULT_SLOW_CONSUMER_TIMEOUT, gt=0, description="seconds a sender waits for a worker that is behind"
    )
    hello_timeout: float = Field(
        DEFAULT_CONNECT_TIMEOUT, gt=0, description="seconds a new connection has to say hello"
    )
    ping_interval: Optional[float] = Field(
        DEFAULT_PING_INTERVAL, gt=0, description="seconds between keepalive pings; 'none' disables them"
    )
    ping_timeout: Optional[float] = Field(
        DEFAULT_PING_TIMEOUT, gt=0, description="seconds to wait for a pong; 'none' waits forever"
    )
    compression: bool = Field(
        False, description="accept per-message deflate from workers that offer it (on or off)"
    )
    grace: float = Field(
        DEFAULT_GRACE, ge=0, description="seconds calls in flight get to finish on SIGTERM/SIGINT"
    )

    @field_validator("loop", "log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("ping_interval", "ping_timeout", "rate_limit", "max_connections", mode="before")
    @classmethod
    def _none(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("", "none", "off"):
            return None
        return value

    def authenticator(self) -> Authenticator | None:
        """The bearer tokens given by ``tokens`` or ``tokens_file``, if any.

        Raises:
            ValueError: Both are given, or the tokens cannot be read.
            OSError: The file cannot be read.
        """
        if self.tokens and self.tokens_file:
            raise ValueError("Give tokens or tokens_file, not both.")
        if self.tokens:
            return BearerTokens.parse(self.tokens)
        if self.tokens_file:
            return BearerTokens.from_file(self.tokens_file)
        return None

    def policy(self) -> AccessPolicy | None:
        """The access policy read from the ``access_policy`` JSON file, if any."""
        if self.access_policy is None:
            return None
        return AccessPolicy.from_mapping(json.loads(Path(self.access_policy).read_text(encoding="utf-8")))

    def limit(self) -> RateLimit | None:
        if self.rate_limit is None:
            return None
        return RateLimit(self.rate_limit, self.rate_burst or max(1, int(2 * self.rate_limit)))

    def uvicorn_ssl(self) -> dict[str, Any]:
        """The TLS settings that were given, as ``uvicorn.Config`` keywords."""
        return {
            name: value
            for name, value in self.model_dump().items()
            if name.startswith("ssl_") and value is not None
        }


def make_server(settings: ServeSettings) -> HttpAgentServer:
    service = HttpAgentService(
        max_message_size=settings.max_message_size,
        max_queued_bytes=settings.max_queued_bytes,
        max_calls_in_flight=settings.max_calls_in_flight,
        slow_consumer_timeout=settings.slow_consumer_timeout,
        hello_timeout=settings.hello_timeout,
        authenticator=settings.authenticator(),
        access_policy=settings.policy(),
        rate_limit=settings.limit(),
        max_connections=settings.max_connections,
        public_routes=[name.strip() for name in settings.public_routes.split(",") if name.strip()],
    )
    return HttpAgentServer(
        settings.host,
        port=settings.port,
        max_message_size=settings.max_message_size,
        ping_interval=settings.ping_interval,
        ping_timeout=settings.ping_timeout,
        service=service,
        compression=settings.compression,
        # uvicorn's own lines repeat ours (connection open/closed): only its warnings, but at DEBUG.
        log_level="debug" if settings.log_level == "debug" else "warning",
        ssl=settings.uvicorn_ssl(),
    )


async def serve(settings: ServeSettings, on_ready: Callable[[HttpAgentServer], None]) -> None:
    """Serve until SIGTERM or SIGINT, then drain for ``settings.grace`` seconds and stop.

    Raises:
        OSError: The address cannot be bound.
    """
    server = make_server(settings)
    await server.start()
    stopping = asyncio.ensure_future(server.stop_when_signal(grace=settings.grace))
    # The server is started, so the task's first step installs the signal handlers: only
    # then is it safe to say we are ready (a SIGTERM before that would kill the process).
    await asyncio.sleep(0)
    if not stopping.done():
        on_ready(server)
    await stopping
