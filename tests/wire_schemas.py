"""The shipped JSON Schemas as validators, and a recorder of every frame a live host routes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

from autogen_http_runtime._host.core import RoutingCore
from autogen_http_runtime._host.session import WorkerSession
from autogen_http_runtime._protocol import schemas as _schemas

#: The frame schemas under ws/, by name, except the union of them all.
#: Frames of at-least-once delivery only (a cluster): checked by tests/test_delivery.py.
AT_LEAST_ONCE_SCHEMAS = ("ws/event-ack-notification.json",)
WS_FRAME_SCHEMAS = sorted(
    schema_id.removeprefix(_schemas.BASE_ID)
    for schema_id in _schemas.load_all()
    if schema_id.startswith(_schemas.BASE_ID + "ws/")
    and not schema_id.endswith(("/frame.json", "/message.json"))
)

_RESPONSE_SCHEMA = {
    "hello": "ws/hello-response.json",
    "send": "ws/send-response.json",
    "agent_metadata": "ws/agent-metadata-response.json",
    "agent_save_state": "ws/agent-save-state-response.json",
    "register_agent_type": "ws/register-agent-type-response.json",
    "state.load": "ws/state-load-response.json",
    "state.save": "ws/state-save-response.json",
}


@cache
def validator(name: str) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resources(
        (schema_id, Resource.from_contents(schema)) for schema_id, schema in _schemas.load_all().items()
    )
    # A name with a fragment, such as "common.json#/$defs/payload", is a part of a file.
    schema = {"$ref": _schemas.BASE_ID + name} if "#" in name else _schemas.load(name)
    return Draft202012Validator(schema, registry=registry)


def errors(name: str, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator(name).iter_errors(instance)
    ]


def assert_valid(name: str, instance: Any) -> None:
    found = errors(name, instance)
    assert not found, f"{json.dumps(instance)[:500]} does not match {name}: {found}"


@dataclass
class Recorded:
    """One frame: ``inbound`` if the host read it from ``session``, else the host wrote it there."""

    inbound: bool
    session: WorkerSession
    text: str


@dataclass
class FrameRecorder:
    """Records the text of every frame a host reads and writes, for the whole test."""

    frames: list[Recorded] = field(default_factory=list)

    @classmethod
    def install(cls, core: RoutingCore, monkeypatch: pytest.MonkeyPatch) -> FrameRecorder:
        recorder = cls()
        handle_text = core.handle_text
        sent = WorkerSession.sent

        def recording_handle_text(session: WorkerSession, text: str) -> WorkerSession | None:
            # A batch (a JSON array, see ws/message.json) is recorded frame by frame.
            try:
                message = json.loads(text)
            except ValueError:
                message = None
            if isinstance(message, list) and message:
                assert_valid("ws/message.json", message)
                recorder.frames.extend(Recorded(True, session, json.dumps(item)) for item in message)
            else:
                recorder.frames.append(Recorded(True, session, text))
            return handle_text(session, text)

        def recording_sent(session: WorkerSession, text: str) -> None:
            recorder.frames.append(Recorded(False, session, text))
            sent(session, text)

        monkeypatch.setattr(core, "handle_text", recording_handle_text)
        monkeypatch.setattr(WorkerSession, "sent", recording_sent)
        return recorder

    def classified(self) -> Iterator[tuple[Recorded, str, Any]]:
        """Each frame, parsed, with its record and the name of the schema that describes it.

        A response is matched to its request by the session and id it travels on. Text that
        is not JSON is left out.
        """
        # (session, request id) -> method, for requests read from / written to that session.
        read: dict[tuple[int, Any], str] = {}
        written: dict[tuple[int, Any], str] = {}
        for record in self.frames:
            try:
                frame = json.loads(record.text)
            except ValueError:
                continue  # not a frame at all: sent on purpose by a test, and answered with an error
            key = (id(record.session), frame.get("id"))
            if "specversion" in frame:
                name = "ws/event.json"
            elif "method" in frame and "id" in frame:
                (read if record.inbound else written)[key] = frame["method"]
                name = f"ws/{frame['method'].replace('_', '-').replace('.', '-')}-request.json"
            elif "method" in frame:
                name = f"ws/{frame['method'].replace('.', '-')}-notification.json"
            elif "error" in frame:
                name = "ws/error-response.json"
            else:
                # A worker answers what the host wrote to it, and the other way round.
                method = (written if record.inbound else read).get(key)
                assert method is not None, f"no request for the response {record.text}"
                name = _RESPONSE_SCHEMA.get(method, "ws/empty-response.json")
            yield record, name, frame
