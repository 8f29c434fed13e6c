"""The samples and the documented examples, run as a user would: in their own processes."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from .redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent
#: Bound on each subprocess; below pytest's global timeout so a hang fails with the output.
TIMEOUT = 45.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def run_python(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})},
        timeout=TIMEOUT,
    )
    assert completed.returncode == 0, (
        f"{args} exited with {completed.returncode}\n"
        f"--- stdout ---\n{completed.stdout}\n--- stderr ---\n{completed.stderr}"
    )
    return completed


def test_demo_end_to_end() -> None:
    port = free_port()
    lines = run_python("samples/run_demo.py", "--port", str(port)).stdout.splitlines()
    assert f"host ready on http://127.0.0.1:{port}" in lines
    assert "reverse → !emitnur PTTH detubirtsid olleH" in lines
    assert "upper   → HELLO DISTRIBUTED HTTP RUNTIME!" in lines
    assert lines[-1] == "all processes stopped"


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("samples/echo_agent.py", ["echo: hello"]),
        ("samples/pubsub.py", ["my_agent/server got '42' on news.tech"]),
        (
            "samples/string_serializer.py",
            ["without a serializer: SerializationError", "reply: 'HELLO, PLAIN STRING' (str)"],
        ),
        (
            "samples/agentchat_team.py",
            [
                "user: Write a haiku about agents on many machines.",
                "poet: Many hosts, one team / words cross the wire and come back / nothing is lost.",
                "critic: Too long. Shorter, please.",
                "poet: One socket each / the host routes every word / the team never knows.",
                "critic: APPROVE",
                "stop reason: Text 'APPROVE' mentioned",
            ],
        ),
    ],
)
def test_section_4_sample(script: str, expected: list[str]) -> None:
    assert run_python(script).stdout.splitlines() == expected


def documented_programs() -> list[object]:
    """Every ```python block in README.md and docs/ that is a whole program (calls asyncio.run)."""
    programs: list[object] = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        blocks = re.findall(r"^```python\n(.*?)^```", path.read_text(encoding="utf-8"), re.M | re.S)
        for number, block in enumerate(blocks, 1):
            if "asyncio.run(" in block:
                programs.append(pytest.param(block, id=f"{path.relative_to(ROOT)}#{number}"))
    return programs


@pytest.mark.parametrize("source", documented_programs())
def test_documented_program_runs(source: str, tmp_path: Path) -> None:
    program = tmp_path / "example.py"
    program.write_text(source, encoding="utf-8")
    if "AUTOGEN_HTTP_REDIS_URL" not in source:
        run_python(str(program))
        return
    # A cluster example (docs/cluster.md) reads where its Redis is from the environment.
    with RedisServer() as redis:
        env = {"AUTOGEN_HTTP_REDIS_URL": redis.url, "AUTOGEN_HTTP_CLUSTER_SECRET": "documented-example"}
        run_python(str(program), env=env)
