"""The payload codec without sockets: serializers made on demand, and nested values rebuilt by class."""

from __future__ import annotations

import subprocess
import sys
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import pytest
from autogen_agentchat.base import Response
from autogen_agentchat.messages import (
    BaseAgentEvent,
    BaseChatMessage,
    CodeExecutionEvent,
    CodeGenerationEvent,
    HandoffMessage,
    MemoryQueryEvent,
    ModelClientStreamingChunkEvent,
    MultiModalMessage,
    SelectorEvent,
    SelectSpeakerEvent,
    StopMessage,
    StructuredMessage,
    TextMessage,
    ThoughtEvent,
    ToolCallExecutionEvent,
    ToolCallRequestEvent,
    ToolCallSummaryMessage,
    UserInputRequestedEvent,
)
from autogen_agentchat.teams._group_chat._events import (
    GroupChatAgentResponse,
    GroupChatMessage,
    GroupChatStart,
    GroupChatTermination,
)
from autogen_core import FunctionCall, Image, try_get_known_serializers_for_type
from autogen_core._serialization import DataclassJsonMessageSerializer, UnknownPayload
from autogen_core.code_executor import CodeBlock, CodeResult
from autogen_core.memory import MemoryContent, MemoryMimeType
from autogen_core.models import (
    AssistantMessage,
    FunctionExecutionResult,
    FunctionExecutionResultMessage,
    RequestUsage,
    SystemMessage,
    UserMessage,
)
from google.protobuf.wrappers_pb2 import StringValue
from PIL import Image as PILImage
from pydantic import BaseModel, model_serializer

from autogen_http_runtime import SerializationError
from autogen_http_runtime._protocol.wire import Payload
from autogen_http_runtime._worker.polymorphic import ModelJsonSerializer
from autogen_http_runtime._worker.serialization import PayloadCodec


class Shape(BaseModel, ABC):
    label: str

    @abstractmethod
    def area(self) -> float: ...


class Circle(Shape):
    type: Literal["circle"] = "circle"  # a discriminator that is not the class name
    radius: float

    def area(self) -> float:
        return 3.0 * self.radius**2


class Square(Shape):
    type: Literal["Square"] = "Square"
    side: float

    def area(self) -> float:
        return self.side**2


class Drawing(BaseModel):
    main: Shape
    others: list[Shape | None] = []
    by_name: dict[str, Shape] = {}


class Animal(BaseModel):
    name: str
    type: str = "Animal"


class Dog(Animal):
    type: str = "Dog"
    good: bool = True


class Kennel(BaseModel):
    resident: Animal  # concrete, but may hold a subclass


@dataclass
class Envelope:
    """A dataclass with a nested model: autogen-core's dataclass serializer refuses it."""

    shape: Shape
    note: str


class Grade(BaseModel):
    approved: bool
    note: str


@dataclass
class Flat:
    n: int


def roundtrip(
    message: object, sender: PayloadCodec | None = None, receiver: PayloadCodec | None = None
) -> object:
    sender = sender or PayloadCodec()
    return (receiver or sender).decode(sender.encode(message))


def test_abstract_fields_are_rebuilt_by_their_concrete_class() -> None:
    drawing = Drawing(
        main=Circle(label="c", radius=2),
        others=[Square(label="s", side=3), None],
        by_name={"big": Square(label="b", side=9)},
    )
    back = roundtrip(drawing)
    assert back == drawing
    assert isinstance(back, Drawing)
    assert isinstance(back.main, Circle) and isinstance(back.others[0], Square)
    assert isinstance(back.by_name["big"], Square)


def test_a_subclass_in_a_concrete_field_keeps_its_fields() -> None:
    back = roundtrip(Kennel(resident=Dog(name="rex", good=False)))
    assert isinstance(back, Kennel)
    assert type(back.resident) is Dog and back.resident.good is False
    plain = roundtrip(Kennel(resident=Animal(name="cat")))
    assert isinstance(plain, Kennel) and type(plain.resident) is Animal


def test_dataclasses_get_serializers_on_demand() -> None:
    codec = PayloadCodec()
    assert roundtrip(Flat(3), codec) == Flat(3)
    # A flat dataclass gets exactly autogen-core's serializer, so the JSON is the same.
    assert isinstance(
        codec.registry._serializers[("Flat", "application/json")], DataclassJsonMessageSerializer
    )
    envelope = Envelope(shape=Square(label="s", side=2), note="n")
    back = roundtrip(envelope, codec)
    assert back == envelope and isinstance(back, Envelope) and isinstance(back.shape, Square)


def test_registered_pydantic_serializers_keep_their_json() -> None:
    codec = PayloadCodec()
    codec.add(try_get_known_serializers_for_type(Kennel))
    serializer = codec.registry._serializers[("Kennel", "application/json")]
    assert isinstance(serializer, ModelJsonSerializer)
    kennel = Kennel(resident=Animal(name="cat"))
    assert codec.encode(kennel).data == kennel.model_dump_json().encode()


def test_a_receiver_decodes_a_type_another_codec_in_the_process_made() -> None:
    class OnlySentHere(BaseModel):
        x: int

    sender, receiver = PayloadCodec(), PayloadCodec()
    assert roundtrip(OnlySentHere(x=1), sender, receiver) == OnlySentHere(x=1)


def test_a_subclass_of_a_registered_type_is_decoded_by_name() -> None:
    class Note(BaseModel, ABC):
        text: str

        @abstractmethod
        def shout(self) -> str: ...

    class LoudNote(Note):
        def shout(self) -> str:
            return self.text.upper()

    receiver = PayloadCodec()
    receiver.add(try_get_known_serializers_for_type(Note))  # what a handler for Note registers
    payload = LoudNote(text="hi").model_dump_json().encode()
    back = receiver.decode(Payload("LoudNote", "application/json", payload))
    assert isinstance(back, LoudNote) and back.shout() == "HI"


def test_unknown_types_decode_to_unknown_payload() -> None:
    back = PayloadCodec().decode(Payload("NobodyKnowsMe", "application/json", b"{}"))
    assert isinstance(back, UnknownPayload) and back.type_name == "NobodyKnowsMe"


def test_protobuf_messages_get_serializers_on_demand() -> None:
    codec = PayloadCodec()
    payload = codec.encode(StringValue(value="x"))
    assert payload.data_content_type == "application/x-protobuf"
    assert payload.data_type == "google.protobuf.StringValue"
    assert codec.decode(payload) == StringValue(value="x")


def test_types_without_a_serializer_that_do_not_qualify_still_fail() -> None:
    with pytest.raises(SerializationError, match="No serializer"):
        PayloadCodec().encode(object())


def test_an_ambiguous_type_name_is_an_error_not_a_guess() -> None:
    def make() -> type[Shape]:
        class Twin(Shape):
            type: Literal["Twin"] = "Twin"

            def area(self) -> float:
                return 0.0

        return Twin

    first, second = make(), make()
    codec = PayloadCodec()
    payload = codec.encode(Drawing(main=first(label="x")))
    with pytest.raises(ValueError, match="ambiguous"):
        codec.decode(payload)
    assert second is not first


# -- AgentChat's group chat messages ---------------------------------------------------


def test_group_chat_messages_round_trip_with_their_concrete_messages() -> None:
    codec = PayloadCodec()
    text = TextMessage(content="hi", source="a")
    structured = StructuredMessage[Grade](content=Grade(approved=True, note="ok"), source="b")
    call = ToolCallRequestEvent(content=[FunctionCall(id="1", arguments="{}", name="f")], source="c")
    messages: list[BaseModel] = [
        GroupChatStart(messages=[text, structured]),
        GroupChatMessage(message=call),
        GroupChatAgentResponse(response=Response(chat_message=text, inner_messages=[call]), name="a"),
        GroupChatTermination(message=StopMessage(content="done", source="m")),
    ]
    for message in messages:
        back = roundtrip(message, codec)
        assert type(back) is type(message)
        assert back == message
    start = roundtrip(messages[0], codec)
    assert isinstance(start, GroupChatStart) and start.messages is not None
    assert [type(m) for m in start.messages] == [TextMessage, StructuredMessage[Grade]]
    response = roundtrip(messages[2], codec)
    assert isinstance(response, GroupChatAgentResponse)
    assert isinstance(response.response.chat_message, BaseChatMessage)
    assert isinstance(response.response.inner_messages, list)
    assert isinstance(response.response.inner_messages[0], BaseAgentEvent)


def every_agentchat_message() -> list[BaseAgentEvent | BaseChatMessage]:
    image = Image.from_pil(PILImage.new("RGB", (2, 2)))
    call = FunctionCall(id="1", arguments="{}", name="f")
    result = FunctionExecutionResult(content="r", call_id="1", name="f", is_error=False)
    return [
        TextMessage(content="t", source="a", models_usage=RequestUsage(prompt_tokens=1, completion_tokens=2)),
        MultiModalMessage(content=["look", image], source="a", metadata={"k": "v"}),
        StopMessage(content="s", source="a"),
        HandoffMessage(
            content="h",
            source="a",
            target="b",
            context=[
                SystemMessage(content="x"),
                UserMessage(content=["u", image], source="u"),
                AssistantMessage(content=[call], source="a"),
                FunctionExecutionResultMessage(content=[result]),
            ],
        ),
        ToolCallSummaryMessage(content="s", source="a", tool_calls=[call], results=[result]),
        ToolCallRequestEvent(content=[call], source="a"),
        ToolCallExecutionEvent(content=[result], source="a"),
        MemoryQueryEvent(content=[MemoryContent(content="m", mime_type=MemoryMimeType.TEXT)], source="a"),
        UserInputRequestedEvent(request_id="r", source="a"),
        ModelClientStreamingChunkEvent(content="c", source="a"),
        ThoughtEvent(content="th", source="a"),
        SelectSpeakerEvent(content=["a"], source="m"),
        CodeGenerationEvent(
            retry_attempt=0,
            content="c",
            code_blocks=[CodeBlock(code="print(1)", language="python")],
            source="a",
        ),
        CodeExecutionEvent(retry_attempt=0, result=CodeResult(exit_code=0, output="1"), source="a"),
        SelectorEvent(content="sel", source="m"),
        StructuredMessage[Grade](content=Grade(approved=False, note="n"), source="b"),
    ]


@pytest.mark.parametrize("message", every_agentchat_message(), ids=lambda m: type(m).__name__)
def test_every_agentchat_message_kind_crosses_inside_a_group_chat_message(
    message: BaseAgentEvent | BaseChatMessage,
) -> None:
    back = roundtrip(GroupChatMessage(message=message))
    assert isinstance(back, GroupChatMessage)
    assert type(back.message) is type(message)
    # Images compare by identity, so compare what the messages hold.
    assert back.message.model_dump() == message.model_dump()


def test_classes_with_their_own_serializer_are_not_walked() -> None:
    class Custom(BaseModel):
        shape: Shape

        @model_serializer
        def as_label(self) -> str:
            return self.shape.label

    custom = Custom(shape=Circle(label="c", radius=1))
    assert PayloadCodec().encode(custom).data == custom.model_dump_json().encode() == b'"c"'


def test_the_package_works_without_agentchat() -> None:
    program = (
        "import sys\n"
        "sys.modules['autogen_agentchat'] = None  # any import of it fails\n"
        "from pydantic import BaseModel\n"
        "import autogen_http_runtime\n"
        "from autogen_http_runtime._worker.serialization import PayloadCodec\n"
        "class M(BaseModel):\n"
        "    x: int\n"
        "codec = PayloadCodec()\n"
        "assert codec.decode(codec.encode(M(x=1))) == M(x=1)\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"
