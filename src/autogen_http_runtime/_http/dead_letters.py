"""The dead letters of at-least-once delivery, for operators: list, replay, drop.

* ``GET /v1/dead-letters``: the newest first (``?limit=``, 100 by default).
* ``POST /v1/dead-letters/{id}/replay``: deliver it again, from its first delivery.
* ``DELETE /v1/dead-letters/{id}``: forget it.

Under an access policy, listing needs the ``read`` right of ``dead-letters`` (as the other
listings do), replaying and dropping its ``manage`` right. With at-most-once delivery there
are none: each answers 404 saying so.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Final

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from .._exceptions import ClusterUnavailableError, ErrorCode
from .._host.deliveries import DeadLetter, DeadLetters
from . import models
from .problems import Problem
from .responses import AsciiJSONResponse

DEAD_LETTERS_PATH: Final = "/v1/dead-letters"
#: A dead letter's id: a stream entry id.
_ID: Final = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


class DeadLetterInfo(BaseModel):
    id: str = Field(description="The dead letter's id (for replay and drop).", examples=["1767225600000-0"])
    event_id: str = Field(description="The CloudEvent's `id`.")
    recipient: str = Field(description="The agent the copy was for, `type/key`.")
    topic_type: str
    topic_source: str
    message_type: str = Field(description="The payload's type (`agmsgtype`).")
    attempts: int = Field(description="How many times it was delivered.")
    reason: str = Field(description="Why the last delivery failed, as far as the host knows.")
    time: datetime = Field(description="When it became a dead letter.")


class DeadLettersListing(BaseModel):
    dead_letters: list[DeadLetterInfo]


def dead_letters_router(store: Callable[[], DeadLetters | None], delivery: str) -> APIRouter:
    """The routes; ``store`` gives the cluster's dead letters (``None`` until the host joined)."""
    router = APIRouter(tags=["operations"])
    not_found = models.problem_doc("No such dead letter, or delivery is at-most-once (there are none).")
    unavailable = models.problem_doc("Redis is out of reach (or the host has not joined its cluster yet).")

    def reach() -> DeadLetters:
        if delivery == "at-most-once":
            raise Problem(
                404,
                "not-found",
                "No dead letters",
                "Delivery is at-most-once on this host: there are no dead letters (docs/delivery.md).",
            )
        found = store()
        if found is None:
            raise Problem.for_code(ErrorCode.CLUSTER_UNAVAILABLE, "The host has not joined its cluster yet.")
        return found

    async def list_dead_letters(
        limit: int = Query(100, ge=1, le=1000, description="How many, newest first."),
    ) -> Response:
        try:
            letters = await reach().dead_letters(limit)
        except Problem as exc:
            return exc.response()
        except ClusterUnavailableError as exc:
            return Problem.for_code(ErrorCode.CLUSTER_UNAVAILABLE, exc.message).response()
        listing = DeadLettersListing(dead_letters=[_info(letter) for letter in letters])
        return AsciiJSONResponse(listing.model_dump(mode="json"))

    async def act(dead_id: str, replay: bool) -> Response:
        try:
            store = reach()
            done = _ID.fullmatch(dead_id) is not None and (
                await (store.replay(dead_id) if replay else store.drop(dead_id))
            )
        except Problem as exc:
            return exc.response()
        except ClusterUnavailableError as exc:
            return Problem.for_code(ErrorCode.CLUSTER_UNAVAILABLE, exc.message).response()
        if not done:
            return Problem(404, "not-found", "No such dead letter", f"No dead letter {dead_id!r}.").response()
        return Response(status_code=204)

    async def replay_dead_letter(dead_id: str) -> Response:
        return await act(dead_id, True)

    async def drop_dead_letter(dead_id: str) -> Response:
        return await act(dead_id, False)

    router.add_api_route(
        DEAD_LETTERS_PATH,
        list_dead_letters,
        methods=["GET"],
        name="list_dead_letters",
        summary="Event copies delivered max_deliveries times and never acknowledged (at-least-once)",
        response_model=DeadLettersListing,
        responses={404: not_found, 503: unavailable},
    )
    for path, endpoint, method, name, summary in (
        (
            DEAD_LETTERS_PATH + "/{dead_id}/replay",
            replay_dead_letter,
            "POST",
            "replay_dead_letter",
            "Deliver a dead letter again, from its first delivery",
        ),
        (
            DEAD_LETTERS_PATH + "/{dead_id}",
            drop_dead_letter,
            "DELETE",
            "drop_dead_letter",
            "Forget a dead letter",
        ),
    ):
        router.add_api_route(
            path,
            endpoint,
            methods=[method],
            name=name,
            summary=summary,
            status_code=204,
            response_class=Response,
            responses={204: {"description": "Done."}, 404: not_found, 503: unavailable},
        )
    return router


def _info(letter: DeadLetter) -> DeadLetterInfo:
    try:
        event = json.loads(letter.copy)
    except ValueError:
        event = {}
    if not isinstance(event, dict):
        event = {}
    return DeadLetterInfo(
        id=letter.id,
        event_id=str(event.get("id", "")),
        recipient=letter.recipient,
        topic_type=str(event.get("type", "")),
        topic_source=str(event.get("source", "")),
        message_type=str(event.get("agmsgtype", "")),
        attempts=letter.attempts,
        reason=letter.reason,
        time=datetime.fromtimestamp(letter.time, tz=timezone.utc),
    )
