"""A throwaway Redis server for tests and benchmarks: Debian's ``redis-server`` as a real process.

Each :class:`RedisServer` runs its own ``redis-server`` on a free loopback port (never 6379, where
the machine's shared instance lives), with no persistence (``--save "" --appendonly no``) in its
own temporary directory. ``start()`` returns once the server's log says it accepts connections;
``kill()`` is a SIGKILL (a host crash), ``pause()``/``resume()`` freeze it (a hung server or a
silent network), ``restart()`` brings it back EMPTY on the same port, ``stop()`` ends it::

    with RedisServer() as server:
        client = redis.asyncio.Redis.from_url(server.url, **server.client_kwargs())
        ...
        server.kill()
        server.restart()

Options: ``password`` alone sets the default user's password (``requirepass``); ``username``
with ``password`` creates an ACL user (``acl_rules``, all keys and channels by default) and
turns the default user off, so a client must authenticate as that user. ``tls=True`` serves
TLS only (``rediss://``) with a throwaway CA from ``trustme``; ``tls_client_auth=True`` also
demands a client certificate (``client_kwargs()`` hands out one).

The module needs nothing but the standard library (``trustme`` only for TLS); a test imports it
as ``from .redis_server import RedisServer``; a benchmark inserts the repository root into
``sys.path`` and imports ``tests.redis_server``.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import weakref
from collections import deque
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import quote

#: Debian's binary; ``make test`` installs the package when it is missing.
REDIS_SERVER = os.environ.get("AUTOGEN_HTTP_REDIS_SERVER", "/usr/bin/redis-server")
#: The machine's shared instance: never ours.
SHARED_PORT = 6379
#: The log line redis-server writes once it serves (7.0: "...connections", 7.2+ adds " tcp"/" tls").
READY_LINE = "Ready to accept connections"
#: How often ``start()`` tries another port when the picked one was taken meanwhile.
PORT_ATTEMPTS = 5


#: Servers still running, stopped at interpreter exit should their owners forget (or crash).
_RUNNING: weakref.WeakSet[RedisServer] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for server in list(_RUNNING):
        server.kill()


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL it when the thread that started it dies, so a
    test run or benchmark killed outright (SIGKILL, `timeout`'s SIGTERM) leaves no server
    behind. Start servers from a long-lived thread (the main one) for the same reason."""
    PR_SET_PDEATHSIG = 1
    assert _PRCTL is not None
    _PRCTL(PR_SET_PDEATHSIG, signal.SIGKILL)


_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None


class RedisServerError(RuntimeError):
    """redis-server did not start (the message carries the end of its log)."""


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel just had free on ``host``. redis-server cannot take port 0 (it means "no
    TCP listener" there), so we ask the kernel for one and hand it over; ``start()`` retries if
    another process takes it in between."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind((host, 0))
            port: int = probe.getsockname()[1]
        if port != SHARED_PORT:
            return port


class RedisServer:
    """One redis-server process on 127.0.0.1; see the module docstring."""

    host = "127.0.0.1"

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        username: str | None = None,
        password: str | None = None,
        acl_rules: str = "~* &* +@all",
        tls: bool = False,
        tls_client_auth: bool = False,
        extra_args: tuple[str, ...] = (),
        start_timeout: float = 10.0,
        executable: str = REDIS_SERVER,
    ) -> None:
        if username is not None and password is None:
            raise ValueError("an ACL user needs a password")
        self._own_dir = directory is None
        self.dir = Path(tempfile.mkdtemp(prefix="redis-test-") if directory is None else directory)
        self.username, self.password, self.acl_rules = username, password, acl_rules
        self.tls, self.tls_client_auth = tls, tls_client_auth
        self.extra_args = extra_args
        self.start_timeout = start_timeout
        self.executable = executable
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None
        self._log: deque[str] = deque(maxlen=200)
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None
        if tls:
            self._make_certificates()

    # -- addresses -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis://`` (or ``rediss://``) with the credentials, for ``Redis.from_url``."""
        scheme = "rediss" if self.tls else "redis"
        auth = ""
        if self.password is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        return f"{scheme}://{auth}{self.host}:{self.port}/0"

    def client_kwargs(self) -> dict[str, Any]:
        """What a redis-py client needs besides ``url``: the CA (and client certificate) for TLS."""
        if not self.tls:
            return {}
        kwargs: dict[str, Any] = {"ssl_ca_certs": str(self.dir / "ca.pem")}
        if self.tls_client_auth:
            kwargs |= {
                "ssl_certfile": str(self.dir / "client.pem"),
                "ssl_keyfile": str(self.dir / "client.key"),
            }
        return kwargs

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log(self) -> str:
        """The last lines redis-server wrote (for assertion messages)."""
        return "".join(self._log)

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> RedisServer:
        """Start on a fresh free port; return once it accepts connections."""
        if self.running:
            raise RuntimeError("already running")
        if not Path(self.executable).exists():
            raise RedisServerError(
                f"{self.executable} is missing: `make test` installs it (apt-get install redis-server)"
            )
        for _ in range(PORT_ATTEMPTS):
            self.port = free_port(self.host)
            if self._launch():
                return self
            if "Address already in use" not in self.log:
                break
        raise RedisServerError(f"redis-server did not start on 127.0.0.1:{self.port}:\n{self.log}")

    def restart(self) -> RedisServer:
        """Kill it if it runs, then start it again on the SAME port with an empty dataset."""
        if self.port == 0:
            raise RuntimeError("never started")
        self.kill()
        for leftover in ("dump.rdb", "appendonly.aof", "appendonlydir"):
            path = self.dir / leftover
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
        if not self._launch():
            raise RedisServerError(f"redis-server did not restart on 127.0.0.1:{self.port}:\n{self.log}")
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash: clients see their connections reset at once."""
        self._end(signal.SIGKILL)

    def stop(self) -> None:
        """SIGTERM (no save: there is nothing to save) and wait; SIGKILL if it lingers. Removes
        the temporary directory the server made for itself."""
        self._end(signal.SIGTERM)
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    def pause(self) -> None:
        """SIGSTOP: connections stay open but nothing answers (a hung server, a lost network)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(signal.SIGCONT)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals -------------------------------------------------------------------------------

    def _arguments(self) -> list[str]:
        args = [
            self.executable,
            "--bind", self.host,
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", "",  # the log goes to stdout, where _read_log watches for READY_LINE
            "--loglevel", "notice",
            "--enable-debug-command", "local",  # DEBUG SLEEP lets a test stall the server
        ]  # fmt: skip
        if self.tls:
            tls_files = [
                "--tls-cert-file", str(self.dir / "server.pem"),
                "--tls-key-file", str(self.dir / "server.key"),
                "--tls-ca-cert-file", str(self.dir / "ca.pem"),
            ]  # fmt: skip
            client_auth = "yes" if self.tls_client_auth else "no"
            listen = ["--port", "0", "--tls-port", str(self.port)]  # TLS only
            args += [*listen, *tls_files, "--tls-auth-clients", client_auth]
        else:
            args += ["--port", str(self.port)]
        if self.username is not None:
            # One argv word per ACL rule: redis-server quotes each word of a multi-word option.
            rules = ["on", f">{self.password}", *self.acl_rules.split()]
            args += ["--user", self.username, *rules, "--user", "default", "off"]
        elif self.password is not None:
            args += ["--requirepass", self.password]
        return [*args, *self.extra_args]

    def _launch(self) -> bool:
        """Run redis-server on ``self.port``; True once its log says it is ready, False if it
        exited first. Raises if it neither exits nor gets ready within ``start_timeout``."""
        self._log.clear()
        self._ready.clear()
        self._proc = subprocess.Popen(
            self._arguments(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # a Ctrl-C in the terminal is for pytest, not for our server
            preexec_fn=_die_with_parent if _PRCTL is not None else None,
        )
        _RUNNING.add(self)
        self._reader = threading.Thread(target=self._read_log, args=(self._proc,), daemon=True)
        self._reader.start()
        if not self._ready.wait(self.start_timeout):
            self.kill()
            raise RedisServerError(f"redis-server not ready within {self.start_timeout} s:\n{self.log}")
        if self._proc.poll() is None and READY_LINE in self.log:
            return True
        self._end(signal.SIGKILL)  # it has exited: reap it and close the pipe
        return False

    def _read_log(self, proc: subprocess.Popen[str]) -> None:
        """Keep the pipe drained all the server's life; signal readiness (or an early exit)."""
        assert proc.stdout is not None
        for line in proc.stdout:
            self._log.append(line)
            if READY_LINE in line:
                self._ready.set()
        self._ready.set()  # EOF: it exited (or was killed) before or after getting ready

    def _end(self, sig: signal.Signals) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            if sig == signal.SIGTERM:
                proc.send_signal(signal.SIGCONT)  # a paused server cannot act on SIGTERM
            proc.send_signal(sig)
            try:
                proc.wait(self.start_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(self.start_timeout)
        self._join_reader()
        if proc.stdout is not None:
            proc.stdout.close()
        self._proc = None
        _RUNNING.discard(self)

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(self.start_timeout)
            self._reader = None

    def _signal(self, sig: signal.Signals) -> None:
        if not self.running:
            raise RuntimeError("not running")
        assert self._proc is not None
        self._proc.send_signal(sig)

    def _make_certificates(self) -> None:
        import trustme  # a dev dependency, needed only for TLS

        ca = trustme.CA()
        ca.cert_pem.write_to_path(str(self.dir / "ca.pem"))
        server = ca.issue_cert("127.0.0.1", "localhost")
        server.private_key_pem.write_to_path(str(self.dir / "server.key"))
        server.cert_chain_pems[0].write_to_path(str(self.dir / "server.pem"))
        client = ca.issue_cert("redis-client@example.org")
        client.private_key_pem.write_to_path(str(self.dir / "client.key"))
        client.cert_chain_pems[0].write_to_path(str(self.dir / "client.pem"))
