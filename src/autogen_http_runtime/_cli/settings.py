"""``autogen-http-runtime serve``: its settings (``serving.py`` runs the host they describe).

Every setting comes from, in order of precedence: a command-line option, an environment
variable named ``AUTOGEN_HTTP_`` plus the setting's name in capitals (``AUTOGEN_HTTP_PORT``),
or the default. ``_cli.py`` only maps options onto :class:`ServeSettings`.
"""

from __future__ import annotations

from typing import Any, Final, Literal, Optional

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .._constants import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_GRACE,
    DEFAULT_HOST,
    DEFAULT_MAX_CALLS_IN_FLIGHT,
    DEFAULT_MAX_MESSAGE_SIZE,
    DEFAULT_MAX_QUEUED_BYTES,
    DEFAULT_MAX_STATE_SIZE,
    DEFAULT_MAX_SUBSCRIPTIONS,
    DEFAULT_PING_INTERVAL,
    DEFAULT_PING_TIMEOUT,
    DEFAULT_PORT,
    DEFAULT_SLOW_CONSUMER_TIMEOUT,
)
from .._host.security import ANONYMOUS, AccessPolicy, Authenticator, BearerTokens, RateLimit
from .._http.admission import DEFAULT_PUBLIC_ROUTES
from .._logging import LogFormat
from . import files

ENV_PREFIX = "AUTOGEN_HTTP_"

LogLevel = Literal["critical", "error", "warning", "info", "debug"]
EventLoop = Literal["auto", "asyncio", "uvloop"]
Delivery = Literal["at-most-once", "at-least-once"]

#: The headings of ``serve --help``, in order: a setting's group names one.
GROUPS: Final = {
    "server": "server",
    "placement": "placement (docs/operations.md)",
    "cluster": "cluster: several hosts as one runtime on Redis (docs/cluster.md)",
    "state": "durable agents (docs/durable-agents.md)",
    "logging": "logging",
    "tls": "TLS (uvicorn's settings, passed through)",
    "security": "security (docs/security.md)",
    "limits": "limits",
}


def _setting(default: Any, group: str, description: str, metavar: str | None = None, **checks: Any) -> Any:
    """A field of :class:`ServeSettings`: its default, where ``--help`` lists it, and what it says."""
    assert group in GROUPS
    return Field(
        default, description=description, json_schema_extra={"group": group, "metavar": metavar}, **checks
    )


class ServeSettings(BaseSettings):
    """The host's settings; each also read from ``AUTOGEN_HTTP_<NAME>``.

    Each field's description is its ``--help`` text, and its group (``_group``) the
    heading it is listed under: the command line is generated from this class.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True)

    host: str = _setting(
        DEFAULT_HOST,
        "server",
        "interface to bind; 0.0.0.0 for every IPv4 interface",
        "HOST",
    )
    port: int = _setting(
        DEFAULT_PORT,
        "server",
        "port to listen on; 0 picks a free one",
        "PORT",
        ge=0,
        le=65535,
    )
    grace: float = _setting(
        DEFAULT_GRACE,
        "server",
        "seconds calls in flight get to finish on SIGTERM/SIGINT",
        "S",
        ge=0,
    )
    loop: EventLoop = _setting(
        "auto",
        "server",
        "event loop: auto is uvloop when installed (the [fast] extra), else asyncio",
    )
    a2a: bool = _setting(
        False,
        "server",
        "serve the agent types workers describe for A2A under /a2a/TYPE (needs the [a2a] extra)",
    )

    replicas: bool = _setting(
        False,
        "placement",
        "let several workers serve one agent type, each agent id placed on one of them",
    )

    redis_url: Optional[str] = _setting(
        None,
        "cluster",
        "join a cluster through this Redis: redis://[user:password@]host:port/db, rediss:// for TLS "
        "(needs the [cluster] extra)",
        "URL",
    )
    cluster_name: str = _setting(
        "default", "cluster", "the cluster's name; several clusters may share one Redis", "NAME"
    )
    cluster_secret: Optional[str] = _setting(
        None,
        "cluster",
        "secret the hosts sign what they send each other with; required with --redis-url "
        "(prefer the environment variable: a command line is visible to other users)",
        "SECRET",
    )
    cluster_lease: float = _setting(
        3.0,
        "cluster",
        "seconds after which a host that stopped renewing its lease is taken as gone",
        "S",
        ge=0.5,
        le=300,
    )
    cluster_link_url: Optional[str] = _setting(
        None,
        "cluster",
        "where the other hosts reach this one for direct links (ws://10.0.0.5:9000), or 'auto' "
        "for the address it binds; without it, Redis carries what hosts send each other",
        "URL",
    )

    state_dir: Optional[str] = _setting(
        None, "state", "keep durable agents' states in this directory (else in memory, or Redis)", "DIR"
    )
    max_state_size: int = _setting(
        DEFAULT_MAX_STATE_SIZE, "state", "largest state of one agent id, in bytes of JSON", "BYTES", ge=2
    )
    delivery: Delivery = _setting(
        "at-most-once",
        "cluster",
        "events: at-least-once keeps each copy in Redis until handled (docs/delivery.md)",
    )
    visibility_timeout: float = _setting(
        30.0, "cluster", "at-least-once: seconds before an unacknowledged copy goes again", "S", ge=0.05
    )
    max_deliveries: int = _setting(5, "cluster", "at-least-once: deliveries before a dead letter", "N", ge=1)

    log_level: LogLevel = _setting("info", "logging", "level of the host's log lines")
    log_format: LogFormat = _setting("text", "logging", "text, or json for one JSON object per line")

    # uvicorn's TLS settings, under uvicorn's names; passed through as they are.
    ssl_keyfile: Optional[str] = _setting(None, "tls", "private key file (PEM)", "FILE")
    ssl_certfile: Optional[str] = _setting(
        None,
        "tls",
        "certificate chain file (PEM); serves HTTPS and WSS",
        "FILE",
    )
    ssl_keyfile_password: Optional[str] = _setting(None, "tls", "password of the key file", "PASSWORD")
    ssl_version: Optional[int] = _setting(
        None,
        "tls",
        "ssl module protocol constant; uvicorn's default is TLS server",
        "N",
    )
    ssl_cert_reqs: Optional[int] = _setting(
        None,
        "tls",
        "client certificates: 0 none, 1 optional, 2 required (uvicorn's default: 0)",
        "N",
    )
    ssl_ca_certs: Optional[str] = _setting(
        None,
        "tls",
        "CA bundle to verify client certificates with",
        "FILE",
    )
    ssl_ciphers: Optional[str] = _setting(
        None,
        "tls",
        "OpenSSL cipher list (uvicorn's default: TLSv1)",
        "CIPHERS",
    )

    tokens: Optional[str] = _setting(
        None,
        "security",
        "bearer tokens as name=token pairs, comma-separated; turns on authentication",
        "PAIRS",
    )
    tokens_file: Optional[str] = _setting(
        None,
        "security",
        "file of name=token lines; turns on authentication",
        "FILE",
    )
    access_policy: Optional[str] = _setting(
        None,
        "security",
        "JSON file of per-identity rules: what each may register, call, publish, subscribe",
        "FILE",
    )
    public_routes: str = _setting(
        ",".join(DEFAULT_PUBLIC_ROUTES),
        "security",
        "comma-separated routes that need no token",
        "NAMES",
    )
    rate_limit: Optional[float] = _setting(
        None,
        "security",
        "calls, publishes and new subscriptions per second per identity; 'none' for no limit",
        "N",
        gt=0,
    )
    rate_burst: Optional[int] = _setting(
        None,
        "security",
        "calls, publishes and new subscriptions an identity may make at once (default: 2 x rate)",
        "N",
        ge=1,
    )
    max_subscriptions: Optional[int] = _setting(
        DEFAULT_MAX_SUBSCRIPTIONS,
        "security",
        "subscriptions the workers of one identity may hold at once; 'none' for no limit",
        "N",
        ge=1,
    )

    max_connections: Optional[int] = _setting(
        None,
        "limits",
        "worker connections the host keeps open; 'none' for no limit",
        "N",
        ge=1,
    )
    max_connections_per_identity: Optional[int] = _setting(
        None,
        "limits",
        "worker connections one identity keeps open (more get HTTP 429); 'none' for no limit",
        "N",
        ge=1,
    )
    max_message_size: int = _setting(
        DEFAULT_MAX_MESSAGE_SIZE,
        "limits",
        "largest WebSocket message in bytes, both ways",
        "BYTES",
        ge=1024,
    )
    max_queued_bytes: int = _setting(
        DEFAULT_MAX_QUEUED_BYTES,
        "limits",
        "bytes queued for one worker before it is dropped as too slow",
        "BYTES",
        ge=1,
    )
    max_calls_in_flight: int = _setting(
        DEFAULT_MAX_CALLS_IN_FLIGHT,
        "limits",
        "calls one worker may have in flight",
        "N",
        ge=1,
    )
    slow_consumer_timeout: float = _setting(
        DEFAULT_SLOW_CONSUMER_TIMEOUT,
        "limits",
        "seconds a sender waits for a worker that is behind",
        "S",
        gt=0,
    )
    hello_timeout: float = _setting(
        DEFAULT_CONNECT_TIMEOUT,
        "limits",
        "seconds a new connection has to send a complete request and to say hello",
        "S",
        gt=0,
    )
    ping_interval: Optional[float] = _setting(
        DEFAULT_PING_INTERVAL,
        "limits",
        "seconds between keepalive pings; 'none' disables them",
        "S",
        gt=0,
    )
    ping_timeout: Optional[float] = _setting(
        DEFAULT_PING_TIMEOUT,
        "limits",
        "seconds to wait for a pong; 'none' waits forever",
        "S",
        gt=0,
    )
    compression: bool = _setting(False, "limits", "accept per-message deflate from workers that offer it")

    @field_validator("loop", "log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator(
        "ping_interval",
        "ping_timeout",
        "rate_limit",
        "max_connections",
        "max_connections_per_identity",
        "rate_burst",
        "max_subscriptions",
        mode="before",
    )
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
            return files.bearer_tokens(self.tokens_file)
        return None

    def policy(self, authenticator: Authenticator | None) -> AccessPolicy | None:
        """The access policy read from the ``access_policy`` JSON file, if any.

        Raises:
            ValueError: The file is not a policy, or, with no tokens (``authenticator`` is
                ``None``, so every caller is ``anonymous``), it gives ``anonymous`` no rule:
                every worker would then be refused.
        """
        if self.access_policy is None:
            return None
        policy = files.access_policy(self.access_policy)
        if authenticator is None and policy.rule_for(ANONYMOUS) is None:
            raise ValueError(
                f"--access-policy {self.access_policy} gives no rule to 'anonymous', the identity of "
                "every caller when neither --tokens nor --tokens-file is given: every worker and "
                "HTTP request would be refused. Give tokens, or a rule for 'anonymous' (or a "
                '"default" rule) in the policy.'
            )
        return policy

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
