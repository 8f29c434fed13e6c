"""samples/a2a_agent.py and samples/a2a_serve.py, run as a user would (docs/a2a.md's programs run in
test_samples.py)."""

from __future__ import annotations

from .test_samples import run_python


def test_a2a_sample() -> None:
    assert run_python("samples/a2a_agent.py").stdout.splitlines() == [
        "in-process: 'HELLO FROM AUTOGEN'",
        "distributed: Forecast(city='Paris', sky='sunny', celsius=21)",
        "same A2A context for one agent id: True",
        "error: A2AAgentError: no forecast for Atlantis",
    ]


def test_a2a_serve_sample() -> None:
    assert run_python("samples/a2a_serve.py").stdout.splitlines() == [
        "agents: ['stock', 'upper']",
        "text part: {'content': 'HELLO, A2A'}",
        "data part: {'enough': True, 'in_stock': 12.0, 'item': 'tea'}",
        "streamed: task, status_update, artifact_update, status_update",
        "error: TASK_STATE_FAILED: KeyError: 'cake'",
        "bad input: InvalidParamsError: Not a valid 'StockQuery' at 'qty': 'many' is not of type 'integer'",
    ]
