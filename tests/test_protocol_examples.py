"""docs/protocol.md's HTTP examples, run as a reader would: a host process, the shipped echo
worker (samples/echo_worker.py) in another, and each curl command of the page.

The commands and the answers they should print are read from the page's code blocks, so the
page and this test cannot drift apart. Each command runs with the real curl where it is
installed, else as the same request made with httpx. The introspection answers the page
shows (``GET /v1/agents``, ...) are checked for their shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .utils import TIMEOUT, bounded

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "protocol.md"
DOC_BASE = "http://127.0.0.1:9000"
CURL = shutil.which("curl")
#: The children talk to 127.0.0.1 only: no proxy, whatever the environment says.
NO_PROXY_ENV = {key: value for key, value in os.environ.items() if not key.lower().endswith("_proxy")} | {
    "PYTHONIOENCODING": "utf-8"
}


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """Every fenced code block of a markdown text, in order: (info string, body)."""
    return re.findall(r"^```(\w*)\n(.*?)^```", text, flags=re.M | re.S)


def curl_examples() -> list[tuple[list[str], Any]]:
    """(curl arguments, the JSON the page says it prints) for each curl example of the page.

    A curl block must be followed at once by a ``json`` block: the answer."""
    blocks = fenced_blocks(DOC.read_text("utf-8"))
    found = []
    for index, (info, body) in enumerate(blocks):
        if info == "bash" and body.lstrip().startswith("curl "):
            assert index + 1 < len(blocks) and blocks[index + 1][0] == "json", (
                f"the curl example {body!r} of {DOC.name} is not followed by the answer it prints"
            )
            found.append((shlex.split(body.replace("\\\n", " ")), json.loads(blocks[index + 1][1])))
    return found


def introspection_examples() -> dict[str, Any]:
    """The answers the page shows for its ``GET`` routes, by path."""
    http_part = DOC.read_text("utf-8").split("\n## HTTP API\n", 1)[1]
    found = re.findall(r"^`GET (/v1/\w+)`:.*?^```json\n(.*?)^```", http_part, flags=re.M | re.S)
    return {path: json.loads(answer) for path, answer in found}


def as_httpx(args: list[str], base_url: str) -> httpx.Request:
    """The request curl would make for ``args`` (the options the page uses)."""
    method, url, headers, data = "GET", "", [], None
    rest = iter(args[1:])
    for arg in rest:
        if arg == "-s":
            continue
        if arg == "-H":
            name, _, value = next(rest).partition(":")
            headers.append((name.strip(), value.strip()))
        elif arg == "-d":
            data, method = next(rest), "POST"
        elif arg == "-X":
            method = next(rest)
        else:
            assert not arg.startswith("-"), f"an option this test does not know: {arg}"
            url = arg.replace(DOC_BASE, base_url)
    return httpx.Request(method, url, headers=headers, content=data)


class Child:
    """A child process whose stdout carries one progress line per event; stderr to a file."""

    def __init__(self, proc: asyncio.subprocess.Process, stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr

    async def expect(self, prefix: str) -> str:
        assert self.proc.stdout is not None
        line = (await bounded(self.proc.stdout.readline())).decode().rstrip("\n")
        assert line.startswith(prefix), (
            f"expected {prefix!r}, got {line!r}; stderr:\n{self.stderr.read_text('utf-8', 'replace')}"
        )
        return line

    async def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return await bounded(self.proc.wait())


@contextlib.asynccontextmanager
async def spawn(tmp_path: Path, name: str, *args: str) -> AsyncIterator[Child]:
    """Run ``python *args`` from the repository root; kill and reap it on the way out."""
    stderr = tmp_path / f"{name}.stderr"
    with stderr.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            *args,
            cwd=ROOT,
            env=NO_PROXY_ENV,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=sink,
        )
    try:
        yield Child(proc, stderr)
    finally:
        if proc.returncode is None:
            proc.kill()
        await bounded(proc.communicate())


async def run_curl(args: list[str], base_url: str) -> Any:
    """Run the example with curl (the page's base URL replaced) and parse what it prints."""
    assert CURL is not None
    proc = await asyncio.create_subprocess_exec(
        CURL,
        *(arg.replace(DOC_BASE, base_url) for arg in args[1:]),
        env=NO_PROXY_ENV,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await bounded(proc.communicate())
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    return json.loads(out)


async def run_httpx(args: list[str], base_url: str) -> Any:
    async with httpx.AsyncClient(timeout=TIMEOUT, trust_env=False) as http:
        response = await http.send(as_httpx(args, base_url))
    return response.json()


def same_shape(real: Any, documented: Any, where: str = "$") -> None:
    """The same members at every level, values of the same JSON types (ids and counts vary)."""
    if isinstance(documented, dict):
        assert isinstance(real, dict) and set(real) == set(documented), (where, real, documented)
        for key in documented:
            same_shape(real[key], documented[key], f"{where}.{key}")
    elif isinstance(documented, list):
        assert isinstance(real, list) and len(real) == len(documented), (where, real, documented)
        for number, (one, other) in enumerate(zip(real, documented, strict=True)):
            same_shape(one, other, f"{where}[{number}]")
    else:
        assert type(real) is type(documented), (where, real, documented)


def test_the_page_has_the_examples_this_test_runs() -> None:
    examples = curl_examples()
    assert [(args[0], args[2]) for args, _ in examples] == [
        ("curl", f"{DOC_BASE}/v1/events"),
        ("curl", f"{DOC_BASE}/v1/events"),
        ("curl", f"{DOC_BASE}/v1/rpc"),
    ]
    assert set(introspection_examples()) == {"/v1/agents", "/v1/subscriptions", "/v1/workers"}
    # The page names the worker these examples need, and it exists.
    assert "samples/echo_worker.py" in DOC.read_text("utf-8")
    assert (ROOT / "samples" / "echo_worker.py").is_file()


@pytest.mark.parametrize("client", ["curl", "httpx"])
async def test_the_curl_examples_against_the_echo_worker(tmp_path: Path, client: str) -> None:
    if client == "curl" and CURL is None:
        pytest.skip("curl is not installed: the httpx run replays the same requests")
    run = run_curl if client == "curl" else run_httpx
    async with spawn(tmp_path, "host", "-m", "autogen_http_runtime", "serve", "--port", "0") as host:
        url = (await host.expect("serving on http://127.0.0.1:")).removeprefix("serving on ")
        async with spawn(tmp_path, "worker", "samples/echo_worker.py", "--host-address", url) as worker:
            await worker.expect(f"echo worker ready on {url}")

            for args, documented in curl_examples():
                assert await run(args, url) == documented, shlex.join(args)
            # Both events reached echo/lobby, as the page says.
            assert await worker.expect("echo/lobby got") == "echo/lobby got 'hello' on greetings/lobby"
            assert await worker.expect("echo/lobby got") == "echo/lobby got 'hello again' on greetings/lobby"

            async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT, trust_env=False) as http:
                for path, documented in introspection_examples().items():
                    real = (await http.get(path)).json()
                    same_shape(real, documented, path)
                    if path == "/v1/agents":
                        assert list(real["agent_types"]) == ["echo"] and real["workers"] == 1
                    elif path == "/v1/subscriptions":
                        kinds = {(s["kind"], s["agent_type"], s["topic"]) for s in real["subscriptions"]}
                        assert kinds == {("type_prefix", "echo", "echo:"), ("type", "echo", "greetings")}

            assert await worker.stop() == 0
            await worker.expect("echo worker stopped")
        assert await host.stop() == 0
