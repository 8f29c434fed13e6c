"""Random values drawn a page at a time: message ids are version 4 UUIDs; masking keys are fresh."""

from __future__ import annotations

import itertools
import uuid

from autogen_http_runtime._randomness import message_ids, random_chunks


def test_message_ids_are_version_4_uuids_as_uuid4_writes_them() -> None:
    ids = list(itertools.islice(message_ids(), 3000))  # across several draws of a page
    for text in ids:
        value = uuid.UUID(text)
        assert (value.version, value.variant, str(value)) == (4, uuid.RFC_4122, text)
    assert len(set(ids)) == len(ids)


def test_masking_keys_are_fresh_for_each_frame() -> None:
    keys = list(itertools.islice(random_chunks(4), 3000))  # across several draws of a page
    assert {len(key) for key in keys} == {4}
    assert len(set(keys)) > 2990  # 4 random bytes each: a few repeats at most
