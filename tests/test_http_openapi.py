"""The OpenAPI document of the HTTP API, checked against a live host with schemathesis.

Schemathesis sends requests generated from the document (valid ones, and for the POST
routes invalid ones too) and checks every answer against it: status codes, content types,
bodies. The run is derandomized, so it is the same on every machine, and small.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import schemathesis
from autogen_core import TypeSubscription
from hypothesis import HealthCheck, Phase, given, settings
from jsonschema import Draft202012Validator
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from autogen_http_runtime import HttpAgentServer
from autogen_http_runtime._protocol import schemas as _schemas

from .conftest import WorkerFactory
from .utils import Recorder, Upper

#: (method, path, examples per generation mode)
OPERATIONS = [
    ("POST", "/v1/events", 25),
    ("POST", "/v1/rpc", 25),
    ("GET", "/v1/agents", 3),
    ("GET", "/v1/subscriptions", 3),
    ("GET", "/v1/workers", 3),
    ("GET", "/v1/dead-letters", 3),  # at-most-once here: a 404 problem, as documented
]
BINARY_MODE_MEDIA_TYPES = ("application/json", "application/octet-stream")


def _excluded_checks(path: str, media_type: str | None) -> list[Any]:
    if path == "/v1/rpc":
        # JSON-RPC answers a malformed request with an error in a 200 response, by design.
        return [negative_data_rejection]
    if path == "/v1/events" and media_type in BINARY_MODE_MEDIA_TYPES:
        # Binary mode needs the ce-* headers, which structured mode does not: OpenAPI cannot say
        # "required for this media type only", so a valid-looking binary request may lack them.
        return [positive_data_acceptance]
    return []


def _run(document: dict[str, Any], base_url: str) -> list[str]:
    schema = schemathesis.openapi.from_dict(document)
    failures: list[str] = []
    for method, path, examples in OPERATIONS:
        operation = schema[path][method]
        modes = [GenerationMode.POSITIVE] + ([GenerationMode.NEGATIVE] if method == "POST" else [])
        for mode in modes:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=examples,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                phases=[Phase.explicit, Phase.generate, Phase.shrink],
            )
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(
                    base_url=base_url,
                    excluded_checks=_excluded_checks(case.operation.path, case.media_type),
                    timeout=10,
                )

            try:
                check()
            except BaseException as exc:  # schemathesis reports an exception group
                failures.append(f"{method} {path} ({mode.value}): {exc}")
    return failures


# Schemathesis' own strategies use `random`, which Hypothesis frowns upon.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_the_openapi_document_matches_what_the_host_does(
    server: HttpAgentServer, make_worker: WorkerFactory
) -> None:
    worker = await make_worker(name="py-a")
    await Upper.register(worker, "upper", Upper)
    await Recorder.register(worker, "recorder", lambda: Recorder(asyncio.Queue()))
    await worker.add_subscription(TypeSubscription("greetings", "recorder"))
    document = server.app.openapi()
    failures = await asyncio.to_thread(_run, document, server.url)
    assert not failures, "\n\n".join(failures)


def _examples(node: Any) -> list[tuple[dict[str, Any], Any]]:
    """Every (schema, example) pair under ``node``: media types and component schemas."""
    found: list[tuple[dict[str, Any], Any]] = []
    if isinstance(node, dict):
        schema = node.get("schema") if "schema" in node else node
        if isinstance(schema, dict):
            if "example" in node:
                found.append((schema, node["example"]))
            for value in node.get("examples", []) if isinstance(node.get("examples"), list) else []:
                found.append((schema, value))
            if isinstance(node.get("examples"), dict):
                found.extend((schema, item["value"]) for item in node["examples"].values())
        for key, value in node.items():
            if key not in ("example", "examples"):
                found.extend(_examples(value))
    elif isinstance(node, list):
        for value in node:
            found.extend(_examples(value))
    return found


def test_every_example_in_the_document_matches_its_schema() -> None:
    document = HttpAgentServer(port=0).app.openapi()
    ours = {
        path: item
        for path, item in document["paths"].items()
        if path.startswith("/v1/") and path != "/v1/worker"
    }
    assert set(ours) == {
        "/v1/events",
        "/v1/rpc",
        "/v1/agents",
        "/v1/subscriptions",
        "/v1/workers",
        "/v1/dead-letters",
        "/v1/dead-letters/{dead_id}",
        "/v1/dead-letters/{dead_id}/replay",
    }
    pairs = _examples(ours) + _examples(document["components"]["schemas"])
    assert len(pairs) >= 10
    for schema, example in pairs:
        # Component references resolve inside a schema that carries the components along.
        validator = Draft202012Validator({**schema, "components": document["components"]})
        assert not list(validator.iter_errors(example)), (example, schema)
    # The request bodies are the shipped schemas, not a copy that could drift.
    events = ours["/v1/events"]["post"]["requestBody"]["content"]
    assert events["application/cloudevents+json"]["schema"] == _schemas.inlined("http/cloudevent.json")
    rpc = ours["/v1/rpc"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert rpc == _schemas.inlined("http/rpc-request.json")
