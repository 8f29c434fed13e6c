"""A2A (Agent2Agent) for AutoGen agents, through the official ``a2a-sdk``; see docs/a2a.md.

Needs the ``a2a`` extra: ``pip install "autogen-http-runtime[a2a]"``.

- :class:`A2AAgent`: an autogen-core agent that forwards each message it receives to a
  remote A2A agent (by URL or Agent Card) and returns the reply; register it on any runtime.
- :class:`A2AAgentError` (and :class:`A2ATimeoutError`): what it raises when the remote agent
  answers with an error, ends its task without a result, cannot be reached or is too slow.

The other way round, a host started with ``a2a=True`` serves the agent types workers offer
with ``HttpWorkerAgentRuntime.register_a2a_skill`` to any A2A client; ``_parts`` holds the
message <-> parts rule both directions share.
"""

from __future__ import annotations

try:
    import a2a.client  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        'autogen_http_runtime.a2a needs the A2A SDK: pip install "autogen-http-runtime[a2a]"'
    ) from exc

from ._agent import A2AAgent
from ._errors import A2AAgentError, A2ATimeoutError

__all__ = ["A2AAgent", "A2AAgentError", "A2ATimeoutError"]

for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
