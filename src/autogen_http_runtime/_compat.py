"""Small helpers for the drop-in promise: code written for the gRPC runtime runs unchanged."""

from __future__ import annotations

import warnings


def warn_grpc_config_ignored(extra_grpc_config: object) -> None:
    """Warn that a gRPC channel/server option given to one of our classes has no effect."""
    if extra_grpc_config:
        warnings.warn(
            "extra_grpc_config is a gRPC option and is ignored by autogen-http-runtime.",
            UserWarning,
            stacklevel=3,
        )
