"""samples/a2a_agent.py, run as a user would (docs/a2a.md's program runs in test_samples.py)."""

from __future__ import annotations

from .test_samples import run_python


def test_a2a_sample() -> None:
    assert run_python("samples/a2a_agent.py").stdout.splitlines() == [
        "in-process: 'HELLO FROM AUTOGEN'",
        "distributed: Forecast(city='Paris', sky='sunny', celsius=21)",
        "same A2A context for one agent id: True",
        "error: A2AAgentError: no forecast for Atlantis",
    ]
