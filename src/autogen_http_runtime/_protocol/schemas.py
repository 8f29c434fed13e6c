"""The JSON Schemas of the wire protocol, shipped in ``schemas/v1/`` next to this module.

``ws/*.json`` describe every WebSocket frame, ``http/*.json`` every body of the HTTP API,
and ``common.json`` what they share. Their ``$id`` names a schema; it is not an address
to fetch: load the files, as :func:`load_all` does. The HTTP routes also put
:func:`inlined` copies in FastAPI's OpenAPI document, so the two cannot disagree.
"""

from __future__ import annotations

import json
import posixpath
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from importlib.abc import Traversable

_PACKAGE: Final = "autogen_http_runtime"
VERSION: Final = "v1"
BASE_ID: Final = f"https://autogen-http-runtime.invalid/schemas/{VERSION}/"
_KEYWORDS_TO_DROP = ("$schema", "$id", "$defs")


@cache
def load(name: str) -> dict[str, Any]:
    """The schema at ``name``, a path relative to ``schemas/v1/`` such as ``"ws/event.json"``."""
    path = _root()
    for part in name.split("/"):
        path = path / part
    text = path.read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def load_all() -> dict[str, dict[str, Any]]:
    """Every shipped schema, by its ``$id``."""
    root = _root()
    found: dict[str, dict[str, Any]] = {}
    for folder in ("", "ws", "http"):
        directory = root / folder if folder else root
        for entry in directory.iterdir():
            if entry.name.endswith(".json"):
                schema = load(f"{folder}/{entry.name}" if folder else entry.name)
                found[schema["$id"]] = schema
    return found


def _root() -> Traversable:
    return resources.files(_PACKAGE) / "schemas" / VERSION


def inlined(name: str) -> dict[str, Any]:
    """The schema at ``name`` with every ``$ref`` replaced by what it points to.

    Inside an OpenAPI document a ``#/...`` reference means the document's root, so the
    shipped files cannot be referred to as they are. None of them is recursive, so
    replacing each reference with its target is exact.
    """
    resolved: dict[str, Any] = _resolve(load(name), name, load(name))
    for keyword in _KEYWORDS_TO_DROP:
        resolved.pop(keyword, None)
    return resolved


def _resolve(node: Any, name: str, document: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_resolve(item, name, document) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str):
        target_name, _, pointer = ref.partition("#")
        if target_name:
            target_name = posixpath.normpath(posixpath.join(posixpath.dirname(name), target_name))
            target_document = load(target_name)
        else:
            target_name, target_document = name, document
        target: Any = target_document
        for part in filter(None, pointer.split("/")):
            target = target[part]
        merged = {key: value for key, value in target.items() if key not in _KEYWORDS_TO_DROP}
        merged.update({key: value for key, value in node.items() if key != "$ref"})
        return _resolve(merged, target_name, target_document)
    return {key: _resolve(value, name, document) for key, value in node.items() if key != "$defs"}
