"""The package's shape: small modules in layered subpackages (docs/architecture.md).

The layers themselves are checked by ``lint-imports`` in ``make check`` (pyproject.toml's
``[tool.importlinter]``); here, what it cannot see.
"""

from __future__ import annotations

from pathlib import Path

import autogen_http_runtime

PACKAGE = Path(autogen_http_runtime.__file__).parent
#: A module this long does more than one job: split it by concern.
MAX_LINES = 420
LAYERS = ("_protocol", "_transport", "_host", "_worker", "_ops", "_http", "_cli")


def test_no_module_is_too_long() -> None:
    too_long = {
        str(path.relative_to(PACKAGE)): lines
        for path in PACKAGE.rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert too_long == {}


def test_every_private_module_lives_in_a_layer_or_is_shared() -> None:
    shared = {"_compat", "_constants", "_exceptions", "_logging", "_randomness", "_signals"}
    top = {path.stem for path in PACKAGE.glob("_*.py") if path.stem not in ("__init__", "__main__")}
    assert top == shared
    assert {path.name for path in PACKAGE.iterdir() if path.is_dir() and path.name.startswith("_")} >= set(
        LAYERS
    )
