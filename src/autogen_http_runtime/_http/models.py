"""What the HTTP API's OpenAPI document says: answer models, examples, and the rest.

The introspection and ``202`` answers are Pydantic models. Request bodies, problem bodies
and JSON-RPC responses are the JSON Schemas shipped in ``schemas/v1/http/`` (see
``_schemas``), put in the document by the helpers at the end: a CloudEvent in binary
mode is not JSON, and a malformed JSON-RPC request deserves a JSON-RPC error rather than
FastAPI's 422, so the routes read their bodies themselves. The tests check real answers
against both these models' schemas and the shipped ones.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Final

from fastapi import APIRouter, Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import HTTPConnection

from .._constants import PROTOCOL_VERSION
from .._protocol import schemas as _schemas
from .._protocol.subscriptions import SubscriptionKind
from .cloudevents import BATCH_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE
from .problems import PROBLEM_CONTENT_TYPE
from .rpc import DEADLINE_HEADER

_WORKER_ID = "3a1cdfa9443f4689bce096da558557ff"
_OTHER_WORKER_ID = "c0ffee0a1b2c4d3e8f9a0b1c2d3e4f50"
OPENAPI_PATH: Final = "/openapi.json"
DOCS_PATH: Final = "/docs"


# -- events ---------------------------------------------------------------------------------

CLOUD_EVENT_EXAMPLE: dict[str, Any] = {
    "specversion": "1.0",
    "id": "evt-1",
    "source": "lobby",
    "type": "greetings",
    "agmsgtype": "Text",
    "datacontenttype": "application/json",
    "data": {"content": "hello"},
}


class EventsAccepted(BaseModel):
    """The events were published, in order."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"ids": ["evt-1"], "delivered": 2}]},
    )

    ids: list[str] = Field(description="The ids of the events published, in the order received.")
    delivered: int = Field(
        ge=0, description="Copies handed to subscribed agents' workers; 0 when nothing subscribes."
    )


PROBLEM_EXAMPLE: dict[str, Any] = {
    "type": "urn:autogen-http:problem:invalid-event",
    "title": "Invalid CloudEvent",
    "status": 400,
    "detail": "CloudEvent attribute 'source' must be a non-empty string.",
}


# -- JSON-RPC ---------------------------------------------------------------------------------

RPC_REQUEST_EXAMPLE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "send",
    "params": {
        "recipient": {"type": "echo", "key": "default"},
        "payload": {"data_type": "Text", "data": {"content": "hi"}},
    },
}
RPC_RESPONSE_EXAMPLE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "result": {
        "payload": {"data_type": "Text", "data_content_type": "application/json", "data": {"content": "HI"}}
    },
}
RPC_ERROR_EXAMPLE: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 2,
    "error": {"code": -32007, "message": "The deadline of 2 s passed; the call was cancelled."},
}


# -- introspection ----------------------------------------------------------------------------


class ReplicaInfo(BaseModel):
    worker_id: str
    name: str = Field(description="The `name` the worker gave in `hello`; may be empty.")
    calls: int = Field(ge=0, description="Calls and event copies routed to it for this type.")
    agent_ids: int | None = Field(
        ge=0,
        description="With replicas: how many agent ids of this type are placed on it (counted up to "
        "100,000 per worker); `null` without replicas.",
    )


class AgentTypeInfo(BaseModel):
    type: str
    replicas: list[ReplicaInfo] = Field(description="The workers serving it, in the order they joined.")


class AgentsListing(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "agent_types": {"echo": _WORKER_ID},
                    "workers": 2,
                    "replicas": True,
                    "types": [
                        {
                            "type": "echo",
                            "replicas": [
                                {"worker_id": _WORKER_ID, "name": "py-a", "calls": 12, "agent_ids": 3},
                                {"worker_id": _OTHER_WORKER_ID, "name": "py-b", "calls": 9, "agent_ids": 2},
                            ],
                        }
                    ],
                }
            ]
        },
    )

    agent_types: dict[str, str] = Field(
        description="Each registered agent type and the id of the (first) worker serving it, sorted by type."
    )
    workers: int = Field(ge=0, description="Connected workers.")
    replicas: bool = Field(description="Whether several workers may serve one agent type.")
    types: list[AgentTypeInfo] = Field(description="Each registered agent type and every worker serving it.")


class SubscriptionInfo(BaseModel):
    id: str
    kind: SubscriptionKind = Field(
        description="`type`: the topic type equals `topic`; `type_prefix`: it starts with `topic`."
    )
    agent_type: str
    topic: str
    worker_id: str | None = Field(description="The worker that added it (it goes when that worker does).")


class SubscriptionsListing(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "subscriptions": [
                        {
                            "id": "s1",
                            "kind": "type_prefix",
                            "agent_type": "echo",
                            "topic": "news.",
                            "worker_id": _WORKER_ID,
                        }
                    ]
                }
            ]
        },
    )

    subscriptions: list[SubscriptionInfo] = Field(description="Sorted by id.")


class WorkerInfo(BaseModel):
    worker_id: str
    name: str = Field(description="The `name` the worker gave in `hello`; may be empty.")
    instance: str = Field(
        description="The `instance` the worker gave in `hello`; empty when it gave none, and to "
        "callers of another identity (only the same identity may resume it)."
    )
    connected_at: datetime = Field(description="When the WebSocket was accepted (UTC).")
    agent_types: list[str] = Field(description="Agent types it serves, sorted.")
    subscriptions: int = Field(ge=0, description="Subscriptions it added that are still in place.")
    messages_in: int = Field(ge=0, description="WebSocket messages received from it.")
    messages_out: int = Field(ge=0, description="WebSocket messages written to it.")
    bytes_in: int = Field(ge=0)
    bytes_out: int = Field(ge=0)
    calls_in_flight: int = Field(ge=0, description="Calls it made that are not answered yet.")
    calls_serving: int = Field(ge=0, description="Calls routed to it that it has not answered yet.")
    calls_made: int = Field(ge=0, description="Calls it made since it connected, answered or not.")
    calls_served: int = Field(ge=0, description="Calls routed to it since it connected, answered or not.")
    max_message_size: int = Field(ge=0, description="The frame size limit agreed in `hello`.")
    host: str | None = Field(
        None,
        description="In a cluster, the host the worker is connected to (listed by another host, its "
        "counters are that host's traffic with it); absent for a host alone.",
    )


class WorkersListing(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "protocol": PROTOCOL_VERSION,
                    "workers": [
                        {
                            "worker_id": _WORKER_ID,
                            "name": "py-a",
                            "instance": "6f1c0e0b3b2a4d7e9f00112233445566",
                            "connected_at": "2025-06-01T12:00:00.000000+00:00",
                            "agent_types": ["echo"],
                            "subscriptions": 1,
                            "messages_in": 12,
                            "messages_out": 9,
                            "bytes_in": 2048,
                            "bytes_out": 1536,
                            "calls_in_flight": 0,
                            "calls_serving": 0,
                            "calls_made": 7,
                            "calls_served": 5,
                            "max_message_size": 16777216,
                        }
                    ],
                }
            ]
        },
    )

    protocol: str = Field(description="The wire protocol version the host speaks.")
    workers: list[WorkerInfo] = Field(description="Connected workers, oldest connection first.")


# -- the parts of the OpenAPI document FastAPI cannot derive ------------------------------------


def problem_doc(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            PROBLEM_CONTENT_TYPE: {
                "schema": _schemas.inlined("http/problem.json"),
                "example": PROBLEM_EXAMPLE,
            }
        },
    }


def events_request_body() -> dict[str, Any]:
    example = CLOUD_EVENT_EXAMPLE
    return {
        "required": True,
        "content": {
            STRUCTURED_CONTENT_TYPE: {"schema": _schemas.inlined("http/cloudevent.json"), "example": example},
            BATCH_CONTENT_TYPE: {
                "schema": _schemas.inlined("http/cloudevent-batch.json"),
                "example": [example],
            },
            "application/json": {
                "schema": {},
                "example": {"content": "hello"},
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }


def rpc_response_doc() -> dict[str, Any]:
    return {
        "description": "The JSON-RPC response, or for a batch the list of responses "
        "(notifications get none). JSON-RPC errors are answered with HTTP 200 too.",
        "content": {
            "application/json": {
                "schema": _schemas.inlined("http/rpc-response.json"),
                "examples": {
                    "result": {"value": RPC_RESPONSE_EXAMPLE},
                    "error": {"value": RPC_ERROR_EXAMPLE},
                },
            }
        },
    }


def rpc_request_body() -> dict[str, Any]:
    return {
        "required": True,
        "content": {
            "application/json": {
                "schema": _schemas.inlined("http/rpc-request.json"),
                "example": RPC_REQUEST_EXAMPLE,
            }
        },
    }


def _header(name: str, description: str, example: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "header",
        "required": False,
        "description": description,
        "schema": {"type": "string"},
        "example": example,
    }


CE_HEADER_PARAMETERS = [
    _header("ce-specversion", "Binary mode: `1.0`.", "1.0"),
    _header("ce-id", "Binary mode: the event id.", "evt-1"),
    _header("ce-source", "Binary mode: the topic source.", "lobby"),
    _header("ce-type", "Binary mode: the topic type.", "greetings"),
    _header("ce-agmsgtype", "Binary mode: the payload's type name.", "Text"),
    _header("ce-agsender", "Binary mode, optional: the publishing agent as `type/key`.", "ui/default"),
]

DEADLINE_PARAMETER = {
    "name": DEADLINE_HEADER,
    "in": "header",
    "required": False,
    "description": "Seconds the calls may take. Past it each unanswered call is cancelled on the host "
    "and answered with error -32007. A call's own `timeout` param can shorten it.",
    "schema": {"type": "number", "minimum": 0},
    "example": 5,
}

EVENTS_DESCRIPTION = (
    "CloudEvents 1.0 in the HTTP binding: binary mode (`ce-*` headers, the body is the data), "
    "structured mode (`application/cloudevents+json`) or batched mode "
    "(`application/cloudevents-batch+json`). `type` is the topic type, `source` the topic source, "
    "`agmsgtype` (or else `dataschema`) the payload's type name. A batch is published whole or not at all."
)

RPC_DESCRIPTION = (
    "A JSON-RPC 2.0 request or batch, as a worker sends over its WebSocket: `send` (params `recipient`, "
    "`payload`, optional `sender`, `message_id`, `timeout`), `agent_metadata`, `agent_save_state`, "
    f"`agent_load_state`. The `{DEADLINE_HEADER}` header bounds the wait; calls past their deadline are "
    "cancelled and answered with error -32007."
)


# -- the document itself --------------------------------------------------------------------


def description_router(app: FastAPI, authenticate: Callable[[HTTPConnection], Awaitable[None]]) -> APIRouter:
    """``GET /openapi.json`` and ``GET /docs`` (Swagger UI) for ``app``, behind ``authenticate``
    (the service's: routes named ``openapi`` and ``docs``, public only if made so)."""

    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=OPENAPI_PATH, title=f"{app.title} - Swagger UI")

    router = APIRouter(dependencies=[Depends(authenticate)])
    router.add_api_route(OPENAPI_PATH, openapi, methods=["GET"], name="openapi", include_in_schema=False)
    router.add_api_route(DOCS_PATH, docs, methods=["GET"], name="docs", include_in_schema=False)
    return router
