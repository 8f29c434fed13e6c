"""The command line: ``autogen-http-runtime serve`` (also ``python -m autogen_http_runtime serve``).

Options map one to one onto :class:`._serve.ServeSettings`; an option not given falls
back to its ``AUTOGEN_HTTP_*`` environment variable, then to the default.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from pydantic import ValidationError

from .. import __version__
from .._http.server import HttpAgentServer
from .._logging import configure_logging
from .settings import ENV_PREFIX, ServeSettings, serve

PROG = "autogen-http-runtime"

DESCRIPTION = """\
Serve an autogen-http-runtime host: workers connect to ws://HOST:PORT/v1/worker.
Also serves GET /healthz, /readyz, /metrics (Prometheus) and /dashboard.
Prints "serving on URL" on stdout once ready; logs go to stderr.
SIGTERM or SIGINT drains calls in flight for --grace seconds, then exits 0."""

EPILOG = f"""\
Every option can also be set with an environment variable: {ENV_PREFIX} plus the
option's name in capitals, '-' as '_' (--max-message-size: {ENV_PREFIX}MAX_MESSAGE_SIZE).
An option on the command line wins over the environment."""


def _option(group: argparse._ArgumentGroup, name: str, help: str, **kwargs: Any) -> None:
    field = ServeSettings.model_fields[name]
    default = "not set" if field.default is None else field.default
    if isinstance(default, bool):
        default = "on" if default else "off"
    group.add_argument(
        "--" + name.replace("_", "-"),
        dest=name,
        default=argparse.SUPPRESS,  # not given: the environment or the default applies
        help=f"{help} (env {ENV_PREFIX}{name.upper()}; default: {default})",
        **kwargs,
    )


def _seconds_or_none(text: str) -> float | None:
    return None if text.strip().lower() in ("none", "off") else float(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="A drop-in HTTP/WebSocket runtime for AutoGen.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve_parser = commands.add_parser(
        "serve",
        help="run a host until SIGTERM or SIGINT",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    server = serve_parser.add_argument_group("server")
    _option(server, "host", "interface to bind; 0.0.0.0 for every IPv4 interface", metavar="HOST")
    _option(server, "port", "port to listen on; 0 picks a free one", type=int, metavar="PORT")
    _option(
        server, "grace", "seconds calls in flight get to finish on SIGTERM/SIGINT", type=float, metavar="S"
    )
    _option(
        server,
        "loop",
        "event loop: auto is uvloop when installed (the [fast] extra), else asyncio",
        choices=["auto", "asyncio", "uvloop"],
        type=str.lower,
    )

    logs = serve_parser.add_argument_group("logging")
    _option(
        logs,
        "log_level",
        "level of the host's log lines",
        choices=["critical", "error", "warning", "info", "debug"],
        type=str.lower,
    )
    _option(
        logs,
        "log_format",
        "text, or json for one JSON object per line",
        choices=["text", "json"],
        type=str.lower,
    )

    tls = serve_parser.add_argument_group("TLS (uvicorn's settings, passed through)")
    _option(tls, "ssl_keyfile", "private key file (PEM)", metavar="FILE")
    _option(tls, "ssl_certfile", "certificate chain file (PEM); serves HTTPS and WSS", metavar="FILE")
    _option(tls, "ssl_keyfile_password", "password of the key file", metavar="PASSWORD")
    _option(
        tls,
        "ssl_version",
        "ssl module protocol constant; uvicorn's default is TLS server",
        type=int,
        metavar="N",
    )
    _option(
        tls, "ssl_cert_reqs", "client certificates: 0 none, 1 optional, 2 required", type=int, metavar="N"
    )
    _option(tls, "ssl_ca_certs", "CA bundle to verify client certificates with", metavar="FILE")
    _option(tls, "ssl_ciphers", "OpenSSL cipher list", metavar="CIPHERS")

    security = serve_parser.add_argument_group("security (docs/security.md)")
    _option(security, "tokens", "bearer tokens as name=token pairs, comma-separated", metavar="PAIRS")
    _option(security, "tokens_file", "file of name=token lines", metavar="FILE")
    _option(security, "access_policy", "JSON file of per-identity access rules", metavar="FILE")
    _option(security, "public_routes", "comma-separated routes that need no token", metavar="NAMES")
    _option(
        security,
        "rate_limit",
        "calls and publishes per second per identity; 'none' for no limit",
        type=_seconds_or_none,
        metavar="N",
    )
    _option(security, "rate_burst", "calls and publishes an identity may make at once", type=int, metavar="N")

    limits = serve_parser.add_argument_group("limits")
    _option(limits, "max_connections", "worker connections the host keeps open", type=int, metavar="N")
    _option(
        limits, "max_message_size", "largest WebSocket message in bytes, both ways", type=int, metavar="BYTES"
    )
    _option(
        limits,
        "max_queued_bytes",
        "bytes queued for one worker before it is dropped as too slow",
        type=int,
        metavar="BYTES",
    )
    _option(limits, "max_calls_in_flight", "calls one worker may have in flight", type=int, metavar="N")
    _option(
        limits,
        "slow_consumer_timeout",
        "seconds a sender waits for a worker that is behind",
        type=float,
        metavar="S",
    )
    _option(limits, "hello_timeout", "seconds a new connection has to say hello", type=float, metavar="S")
    _option(
        limits,
        "ping_interval",
        "seconds between keepalive pings; 'none' disables them",
        type=_seconds_or_none,
        metavar="S",
    )
    _option(
        limits,
        "ping_timeout",
        "seconds to wait for a pong; 'none' waits forever",
        type=_seconds_or_none,
        metavar="S",
    )
    _option(
        limits,
        "compression",
        "accept per-message deflate from workers that offer it",
        choices=["on", "off"],
        type=str.lower,
    )
    return parser


def _say_ready(server: HttpAgentServer) -> None:
    sys.stdout.write(f"serving on {server.url}\n")
    sys.stdout.flush()


def _runner(loop: str) -> Callable[[Coroutine[Any, Any, None]], None] | None:
    """What runs the host on the event loop ``loop`` names; ``None`` if it is not installed."""
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            return None if loop == "uvloop" else asyncio.run
        return uvloop.run
    return asyncio.run


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    if args.pop("command") != "serve":
        parser.print_help(sys.stderr)
        return 2
    try:
        settings = ServeSettings(**args)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        parser.exit(2, f"{PROG} serve: invalid setting: {problems}\n")
    configure_logging(settings.log_level, settings.log_format)
    run = _runner(settings.loop)
    if run is None:
        parser.exit(
            2, f"{PROG} serve: --loop uvloop needs uvloop: pip install 'autogen-http-runtime[fast]'\n"
        )
    try:
        run(serve(settings, _say_ready))
    except OSError as exc:  # the port is taken, a certificate file is missing, ...
        sys.stderr.write(f"{PROG} serve: {exc}\n")
        return 1
    except ValueError as exc:  # unreadable tokens or access policy
        sys.stderr.write(f"{PROG} serve: invalid setting: {exc}\n")
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 130
    return 0
