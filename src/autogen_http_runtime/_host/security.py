"""Who may connect to a host and what each caller may do there: identities, tokens, policy, limits.

No web framework here: an authenticator reads plain header mappings, and the routing
core asks an :class:`AccessPolicy` and a :class:`RateLimit` about a session's
:class:`Identity`. ``HttpAgentService`` runs the authenticator at the WebSocket
handshake and on each HTTP request (see ``docs/security.md``).
"""

from __future__ import annotations

import fnmatch
import hmac
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Union, get_args

__all__ = [
    "ANONYMOUS",
    "AccessPolicy",
    "AccessRule",
    "Action",
    "Authenticator",
    "BearerTokens",
    "Identity",
    "RateLimit",
    "RateLimiter",
    "bearer_token",
]

#: What an identity may be allowed to do, each checked against an agent type, a topic type, or
#: (``read``, ``manage``) the name of a listing.
Action = Literal["register", "call", "route", "publish", "subscribe", "read", "manage"]
ACTIONS: Final[tuple[Action, ...]] = get_args(Action)


@dataclass(frozen=True)
class Identity:
    """Who is on the other end of a connection or request, as an authenticator decided.

    Args:
        name: The identity's name: what :class:`AccessPolicy` rules and rate limits key on,
            and what the host's logs and ``/v1/workers`` show.
        claims: Anything else the authenticator wants to keep (e.g. a JWT's claims).
        expires_at: When the credentials stop being valid, in seconds since the epoch (as
            ``time.time()``). The host refuses an identity past it, and closes a worker
            connection (code 1008) when it passes. ``None`` (the default): the claims'
            ``exp``, when it is a number (a JWT's expiry), else never.
    """

    name: str
    claims: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    expires_at: float | None = field(default=None, compare=False, hash=False)

    @property
    def expiry(self) -> float | None:
        """When this identity expires (``expires_at``, or the claims' numeric ``exp``); ``None``: never."""
        if self.expires_at is not None:
            return self.expires_at
        exp = self.claims.get("exp")
        return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None

    def expired(self, now: float | None = None) -> bool:
        """Whether it has expired by ``now`` (``time.time()`` by default)."""
        expiry = self.expiry
        return expiry is not None and expiry <= (time.time() if now is None else now)


#: The identity of every caller when the host has no authenticator.
ANONYMOUS = Identity("anonymous")

#: An async callable that reads the request's (or WebSocket handshake's) headers, with
#: lower-case names, and returns the caller's identity, or ``None`` to refuse it (HTTP 401).
#: Returning a plain string is the same as ``Identity(that_string)``.
Authenticator = Callable[[Mapping[str, str]], Awaitable[Union[Identity, str, None]]]


def bearer_token(headers: Mapping[str, str]) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``."""
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class BearerTokens:
    """The built-in authenticator: static API keys sent as ``Authorization: Bearer <key>``.

    Each key maps to an identity name. Keys are compared in constant time
    (:func:`hmac.compare_digest`), and every key is compared, so the time taken says
    nothing about which key came close.

    Args:
        tokens: Identity name -> key (several names may not share a key).

    Raises:
        ValueError: No keys, an empty key, or one key given to two identities.
    """

    def __init__(self, tokens: Mapping[str, str]) -> None:
        if not tokens:
            raise ValueError("BearerTokens needs at least one 'name -> token' pair.")
        seen: dict[str, str] = {}
        for name, token in tokens.items():
            if not name or not token:
                raise ValueError("Every bearer token needs a non-empty identity name and token.")
            if token in seen:
                raise ValueError(f"Identities {seen[token]!r} and {name!r} share a token.")
            seen[token] = name
        self._keys = [(token.encode(), Identity(name)) for name, token in tokens.items()]

    @property
    def names(self) -> list[str]:
        """The identity names, in the order given."""
        return [identity.name for _, identity in self._keys]

    def remove(self, name: str) -> bool:
        """Stop accepting ``name``'s token: its next handshake or request is refused (401).

        Connections open now stay open: close them with ``HttpAgentService.revoke(name)``.
        Returns whether ``name`` had a token.
        """
        kept = [(key, identity) for key, identity in self._keys if identity.name != name]
        removed = len(kept) != len(self._keys)
        self._keys = kept
        return removed

    @classmethod
    def parse(cls, text: str) -> BearerTokens:
        """Read ``name=token`` pairs separated by commas or new lines; ``#`` starts a comment.

        Raises:
            ValueError: A pair without ``=``, or see the class.
        """
        tokens: dict[str, str] = {}
        for raw in text.replace(",", "\n").splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            name, sep, token = line.partition("=")
            if not sep:
                raise ValueError("Bearer tokens are written 'name=token', one pair per line or comma.")
            if name.strip() in tokens:
                raise ValueError(f"Identity {name.strip()!r} is given twice.")
            tokens[name.strip()] = token.strip()
        return cls(tokens)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> BearerTokens:
        """Read ``name=token`` lines from a file (see :meth:`parse`)."""
        return cls.parse(Path(path).read_text(encoding="utf-8"))

    @classmethod
    def from_env(cls, variable: str = "AUTOGEN_HTTP_TOKENS") -> BearerTokens:
        """Read ``name=token`` pairs from an environment variable (see :meth:`parse`).

        Raises:
            ValueError: The variable is not set or holds no pairs.
        """
        text = os.environ.get(variable)
        if not text:
            raise ValueError(f"The environment variable {variable} holds no bearer tokens.")
        return cls.parse(text)

    async def __call__(self, headers: Mapping[str, str]) -> Identity | None:
        token = bearer_token(headers)
        if token is None:
            return None
        offered = token.encode()
        found: Identity | None = None
        for key, identity in self._keys:
            if hmac.compare_digest(offered, key) and found is None:
                found = identity
        return found


def _patterns(value: str | Iterable[str]) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


@dataclass(frozen=True, init=False)
class AccessRule:
    """What one identity may do: ``fnmatch``-style patterns per action.

    Each action is allowed for a name that matches any of its patterns (``"*"`` is
    everything, ``()`` nothing, ``"team.*"`` every name that starts with ``team.``).
    For a prefix subscription (``TypePrefixSubscription``) the prefix itself must match.

    Args:
        register: Agent types the identity may register (serve).
        call: Agent types it may send RPCs to (``send_message``, state and metadata calls).
        route: Agent types it may subscribe to topics without serving them (so that what is
            published there reaches their agents). ``None`` (the default): the ``call``
            patterns, since whoever may call an agent type reaches its agents already.
            Types it may ``register`` it may always subscribe.
        publish: Topic types it may publish to.
        subscribe: Topic types it may subscribe agents to.
        read: Listings it may read: ``agents``, ``subscriptions``, ``workers`` (``GET /v1/...``),
            ``metrics``, ``dashboard`` and ``dead-letters``.
        manage: Listings whose entries it may act on: ``dead-letters`` (replay and drop them,
            which delivers events again or loses them). Reading them needs ``read`` too.
    """

    register: tuple[str, ...]
    call: tuple[str, ...]
    route: tuple[str, ...]
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    read: tuple[str, ...]
    manage: tuple[str, ...]

    def __init__(
        self,
        *,
        register: str | Iterable[str] = (),
        call: str | Iterable[str] = (),
        route: str | Iterable[str] | None = None,
        publish: str | Iterable[str] = (),
        subscribe: str | Iterable[str] = (),
        read: str | Iterable[str] = (),
        manage: str | Iterable[str] = (),
    ) -> None:
        object.__setattr__(self, "register", _patterns(register))
        object.__setattr__(self, "call", _patterns(call))
        object.__setattr__(self, "route", self.call if route is None else _patterns(route))
        object.__setattr__(self, "publish", _patterns(publish))
        object.__setattr__(self, "subscribe", _patterns(subscribe))
        object.__setattr__(self, "read", _patterns(read))
        object.__setattr__(self, "manage", _patterns(manage))

    @classmethod
    def allow_all(cls) -> AccessRule:
        """A rule that allows every action on every name."""
        return cls(register="*", call="*", route="*", publish="*", subscribe="*", read="*", manage="*")

    def allows(self, action: Action, name: str) -> bool:
        patterns: tuple[str, ...] = getattr(self, action)
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


class AccessPolicy:
    """Per-identity authorisation that the host's routing core enforces.

    With a policy, the host also verifies every sender: a worker may name as the sender
    of a call or publish only an agent whose type it registered itself (an HTTP caller:
    a type its rule lets it register), so no one can speak for another's agents.

    Args:
        rules: Identity name -> what it may do.
        default: The rule for identities not in ``rules``; ``None`` (the default) allows
            them nothing.
    """

    def __init__(self, rules: Mapping[str, AccessRule], default: AccessRule | None = None) -> None:
        self._rules = dict(rules)
        self._default = default

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AccessPolicy:
        """Build a policy from plain data, e.g. a parsed JSON file::

            {"rules": {"planner": {"register": ["planner"], "call": ["*"],
                                   "publish": ["tasks.*"], "subscribe": ["results"],
                                   "read": ["agents"]}},
             "default": null}

        Raises:
            ValueError: An unknown key.
        """
        unknown = set(data) - {"rules", "default"}
        if unknown:
            raise ValueError(f"Unknown access policy keys: {sorted(unknown)}.")

        def rule(spec: Mapping[str, Any]) -> AccessRule:
            extra = set(spec) - set(ACTIONS)
            if extra:
                raise ValueError(f"Unknown access rule keys: {sorted(extra)}.")
            return AccessRule(**spec)

        default = data.get("default")
        return cls(
            {name: rule(spec) for name, spec in dict(data.get("rules") or {}).items()},
            None if default is None else rule(default),
        )

    def rule_for(self, identity: Identity) -> AccessRule | None:
        return self._rules.get(identity.name, self._default)

    def describe(self) -> str:
        """The policy as text, the same for equal policies (the hosts of a cluster compare it)."""
        return repr((sorted(self._rules.items()), self._default))

    def allows(self, identity: Identity, action: Action, name: str) -> bool:
        """Whether ``identity`` may do ``action`` on the agent or topic type ``name``."""
        rule = self.rule_for(identity)
        return rule is not None and rule.allows(action, name)


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per identity: ``rate`` calls and publishes a second, bursts up to ``burst``.

    All connections and HTTP requests of one identity share its bucket. A call or
    publish over the limit fails with ``TooManyCallsError`` (-32011) at once.
    """

    rate: float
    burst: int

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.burst < 1:
            raise ValueError("A rate limit needs rate > 0 and burst >= 1.")


class RateLimiter:
    """The buckets of a :class:`RateLimit`, one per identity name."""

    def __init__(self, limit: RateLimit, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, identity: Identity) -> bool:
        """Take one token from the identity's bucket; ``False`` if it is empty."""
        now = self._clock()
        tokens, last = self._buckets.get(identity.name, (float(self.limit.burst), now))
        tokens = min(float(self.limit.burst), tokens + (now - last) * self.limit.rate)
        if tokens < 1.0:
            self._buckets[identity.name] = (tokens, now)
            return False
        self._buckets[identity.name] = (tokens - 1.0, now)
        return True

    def retry_after(self, identity: Identity) -> float:
        """Seconds until the identity's bucket holds a token again (0 if it holds one)."""
        tokens, last = self._buckets.get(identity.name, (float(self.limit.burst), self._clock()))
        tokens = min(float(self.limit.burst), tokens + (self._clock() - last) * self.limit.rate)
        return max(0.0, (1.0 - tokens) / self.limit.rate)
