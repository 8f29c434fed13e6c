"""Run the whole demo: the host, two workers and the orchestrator, each in its own process.

    python samples/run_demo.py [--port 9000] [--timeout 30]

This is what `make demo` runs. It waits for each process's ready line (never a fixed
sleep), stops every process on the way out, even after an error or Ctrl-C, and exits
with a non-zero status if any step failed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

SAMPLES = Path(__file__).resolve().parent


class DemoError(Exception):
    """A step of the demo failed; the message says which, with the process's output."""


class Child:
    """A sample running in a subprocess; its stdout and stderr are collected line by line."""

    def __init__(self, name: str, process: asyncio.subprocess.Process, ready_line: str | None) -> None:
        self.name = name
        self.process = process
        self.lines: list[str] = []
        self._ready_line = ready_line
        self._ready = asyncio.Event()
        # Reading until EOF also keeps the pipe drained, so a chatty child never blocks on it.
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def spawn(cls, name: str, script: str, *args: str, ready_line: str | None = None) -> Child:
        # The parent decodes the output as UTF-8, so the children must write it so.
        env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(SAMPLES / script),
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env=env,
        )
        return cls(name, process, ready_line)

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.lines.append(line)
            if line == self._ready_line:
                self._ready.set()

    def output(self) -> str:
        shown = "\n".join(f"  | {line}" for line in self.lines[-40:])
        return f"\n--- output of {self.name} (pid {self.process.pid}) ---\n{shown or '  | (nothing)'}"

    async def wait_ready(self, timeout: float) -> None:
        """Return once the child printed its ready line; raise DemoError if it exits or times out first."""
        ready = asyncio.create_task(self._ready.wait())
        try:
            await asyncio.wait({ready, self._reader}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ready.cancel()
        if self._ready.is_set():
            print(self._ready_line, flush=True)
            return
        if self._reader.done():  # EOF on its output: the child has exited
            code = await self.process.wait()
            raise DemoError(f"{self.name} exited with status {code} before it was ready.{self.output()}")
        raise DemoError(f"{self.name} printed no ready line within {timeout:g} s.{self.output()}")

    async def wait_exit(self, timeout: float) -> int:
        """Wait for the child to exit by itself and for its last output."""
        try:
            code = await asyncio.wait_for(self.process.wait(), timeout)
        except asyncio.TimeoutError:
            raise DemoError(f"{self.name} did not finish within {timeout:g} s.{self.output()}") from None
        await self._reader
        return code

    async def stop(self, timeout: float) -> str | None:
        """SIGTERM, wait up to ``timeout`` seconds, then SIGKILL. Returns a problem, or None."""
        problem = None
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
                problem = f"{self.name} ignored SIGTERM for {timeout:g} s and was killed."
        await self._reader
        # 0 is a graceful stop; -SIGTERM means the signal came before the handlers were installed.
        if problem is None and self.process.returncode not in (0, -signal.SIGTERM):
            problem = f"{self.name} exited with status {self.process.returncode}."
        return None if problem is None else problem + self.output()


async def run_demo(port: int, timeout: float) -> None:
    address = f"127.0.0.1:{port}"
    children: list[Child] = []
    succeeded = False
    try:
        host = await Child.spawn(
            "host", "run_server.py", "--port", str(port), ready_line=f"host ready on http://{address}"
        )
        children.append(host)
        await host.wait_ready(timeout)

        workers = []
        for name in ("reverse", "upper"):
            worker = await Child.spawn(
                name,
                f"workers/{name}_agent.py",
                "--host-address",
                address,
                ready_line=f"worker ready: {name}",
            )
            children.append(worker)
            workers.append(worker)
        for worker in workers:
            await worker.wait_ready(timeout)

        orchestrator = await Child.spawn("orchestrator", "orchestrator.py", "--host-address", address)
        children.append(orchestrator)
        code = await orchestrator.wait_exit(timeout)
        if code != 0:
            raise DemoError(f"orchestrator exited with status {code}.{orchestrator.output()}")
        for line in orchestrator.lines:
            print(line, flush=True)
        succeeded = True
    finally:
        # Workers first, so they leave the host cleanly; then the host.
        problems = await asyncio.gather(*(child.stop(timeout) for child in children[1:]))
        if children:
            problems.append(await children[0].stop(timeout))
        found = [problem for problem in problems if problem is not None]
        # After an earlier failure, that error is the one to report; these would only repeat it.
        if found and succeeded:
            raise DemoError("\n".join(found))
    print("all processes stopped", flush=True)


async def main(port: int, timeout: float) -> int:
    # Ctrl-C or SIGTERM cancels the demo, so that the clean-up above still runs.
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, task.cancel)
    try:
        await run_demo(port, timeout)
    except DemoError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    except asyncio.CancelledError:
        print("demo interrupted; all processes stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=9000, help="port for the host (default: %(default)s)")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="seconds to wait for each step (default: %(default)s)"
    )
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.port, args.timeout)))
