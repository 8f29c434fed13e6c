"""Reading and writing the values inside a request's params: agent ids, names, numbers. No I/O.

Each reader raises :class:`MessageError` with ``INVALID_PARAMS`` naming the bad field;
:func:`tagged` gives that error the id of the request it answers.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Final

from autogen_core import AgentId

from .._compat import is_valid_agent_type
from .._exceptions import ErrorCode
from .errors import MessageError, RequestId

JsonObject = dict[str, Any]


def agent_id_to_wire(agent_id: AgentId) -> JsonObject:
    return {"type": agent_id.type, "key": agent_id.key}


def agent_id_from_wire(params: JsonObject, name: str, *, optional: bool = False) -> AgentId | None:
    """Read ``params[name]``, an object ``{"type": str, "key": str}``, as an AgentId.

    Raises:
        MessageError: ``INVALID_PARAMS`` naming the field when it is missing or malformed.
    """
    value = params.get(name)
    if value is None:
        if optional:
            return None
        raise MessageError(ErrorCode.INVALID_PARAMS, f"'{name}' is required.")
    if not isinstance(value, dict):
        raise MessageError(ErrorCode.INVALID_PARAMS, f"'{name}' must be an object with 'type' and 'key'.")
    agent_type, key = value.get("type"), value.get("key")
    if isinstance(agent_type, str) and isinstance(key, str):
        short = len(agent_type) + len(key) <= _CACHED_ID_LENGTH
        agent_id = (_cached_agent_id if short else _cached_agent_id.__wrapped__)(agent_type, key)
        if agent_id is not None:
            return agent_id
    if not isinstance(agent_type, str) or not is_valid_agent_type(agent_type):
        raise MessageError(
            ErrorCode.INVALID_PARAMS, f"'{name}.type' must be a valid agent type (letters, digits, _-.)."
        )
    raise MessageError(ErrorCode.INVALID_PARAMS, f"'{name}.key' must be a string.")


#: Agent ids up to this many characters (type and key) are cached, so that the cache holds
#: a few megabytes at most whatever keys callers send.
_CACHED_ID_LENGTH: Final = 200


@functools.lru_cache(maxsize=4096)
def _cached_agent_id(agent_type: str, key: str) -> AgentId | None:
    """The AgentId, or ``None`` for an invalid type: the ids calls name recur, and checking
    a type takes autogen-core's regular expression twice (ours, then ``AgentId()``'s)."""
    return AgentId(agent_type, key) if is_valid_agent_type(agent_type) else None


def required_agent_id(params: JsonObject, name: str) -> AgentId:
    agent_id = agent_id_from_wire(params, name)
    assert agent_id is not None
    return agent_id


def agent_id_from_str(value: str, name: str, code: ErrorCode) -> AgentId:
    agent_type, sep, key = value.partition("/")
    if not sep or not is_valid_agent_type(agent_type):
        raise MessageError(code, f"'{name}' must be an agent id 'type/key'.")
    return AgentId(agent_type, key)


def event_agent(attributes: JsonObject, name: str) -> AgentId | None:
    """The agent named by the ``agsender``/``agrecipient`` attribute of a decoded event."""
    value = attributes.get(name)
    return None if value is None else agent_id_from_str(value, name, ErrorCode.INVALID_REQUEST)


def required_str(params: JsonObject, name: str) -> str:
    value = params.get(name)
    if not isinstance(value, str) or not value:
        raise MessageError(ErrorCode.INVALID_PARAMS, f"'{name}' must be a non-empty string.")
    return value


def optional_number(params: JsonObject, name: str) -> float | None:
    value = params.get(name)
    if value is None:
        return None
    # json reads NaN, Infinity and integers too large for a float: none is a usable number.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= sys.float_info.max:
        raise MessageError(ErrorCode.INVALID_PARAMS, f"'{name}' must be a non-negative number.")
    return float(value)


@contextmanager
def tagged(request_id: RequestId | None) -> Iterator[None]:
    """Give a :class:`MessageError` raised in the block the id of the request it answers."""
    try:
        yield
    except MessageError as exc:
        exc.request_id = request_id
        raise


@functools.lru_cache(maxsize=1024)  # the host's, once per save
def writer_token(instance: str) -> str:
    """Who saved a durable agent's state, as stores keep it and ``state.load`` tells: a digest
    of the worker's instance id (the id itself lets a worker take over a session)."""
    return hashlib.sha256(instance.encode("utf-8")).hexdigest()[:16]
