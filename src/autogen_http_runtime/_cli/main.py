"""The command line: ``autogen-http-runtime serve`` (also ``python -m autogen_http_runtime serve``).

Its options are generated from :class:`.settings.ServeSettings`, one per field, with the
field's description as help; an option not given falls back to its ``AUTOGEN_HTTP_*``
environment variable, then to the default.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Literal, get_args, get_origin

from pydantic import ValidationError

from .._constants import __version__
from .._exceptions import ClusterJoinError
from .._http.server import HttpAgentServer
from .._logging import configure_logging
from .serving import serve
from .settings import ENV_PREFIX, GROUPS, ServeSettings

PROG = "autogen-http-runtime"

DESCRIPTION = """\
Serve an autogen-http-runtime host: workers connect to ws://HOST:PORT/v1/worker.
Also serves GET /healthz, /readyz, /metrics (Prometheus) and /dashboard; with --a2a,
the agent types workers offer over A2A under /a2a/TYPE (docs/a2a.md).
Prints "serving on URL" on stdout once ready; logs go to stderr.
SIGTERM or SIGINT drains calls in flight for --grace seconds, then exits 0."""

EPILOG = f"""\
Every option can also be set with an environment variable: {ENV_PREFIX} plus the
option's name in capitals, '-' as '_' (--max-message-size: {ENV_PREFIX}MAX_MESSAGE_SIZE).
An option on the command line wins over the environment."""


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
    groups = {name: serve_parser.add_argument_group(title) for name, title in GROUPS.items()}
    for name, field in ServeSettings.model_fields.items():
        extra = field.json_schema_extra
        assert isinstance(extra, dict)
        default = "not set" if field.default is None else field.default
        if isinstance(default, bool):
            default = "on" if default else "off"
        groups[str(extra["group"])].add_argument(
            "--" + name.replace("_", "-"),
            dest=name,
            default=argparse.SUPPRESS,  # not given: the environment or the default applies
            help=f"{field.description} (env {ENV_PREFIX}{name.upper()}; default: {default})",
            **_reading(field.annotation, extra.get("metavar")),
        )
    return parser


def _reading(annotation: Any, metavar: object) -> dict[str, Any]:
    """How argparse reads a setting of this type: ``type`` and ``choices`` or ``metavar``."""
    if get_origin(annotation) is Literal:
        return {"choices": list(get_args(annotation)), "type": str.lower}
    if annotation is bool:
        # A switch also given alone: --a2a is --a2a on.
        return {"choices": ["on", "off"], "type": str.lower, "nargs": "?", "const": "on"}
    kinds = [kind for kind in get_args(annotation) if kind is not type(None)] or [annotation]
    kind = kinds[0]
    reader: Callable[[str], Any] = kind
    if kind is not str and type(None) in get_args(annotation):
        reader = functools.partial(_number_or_none, kind)
        reader.__name__ = kind.__name__  # type: ignore[attr-defined]  # what argparse names in errors
    return {"type": reader, "metavar": metavar}


def _number_or_none(kind: Callable[[str], Any], text: str) -> Any:
    return None if text.strip().lower() in ("none", "off") else kind(text)


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
    except ClusterJoinError as exc:  # Redis cannot be reached, the cluster runs other settings
        sys.stderr.write(f"{PROG} serve: {exc}\n")
        return 1
    except OSError as exc:  # the port is taken, a certificate file is missing, ...
        sys.stderr.write(f"{PROG} serve: {exc}\n")
        return 1
    except ValueError as exc:  # unreadable tokens or access policy
        sys.stderr.write(f"{PROG} serve: invalid setting: {exc}\n")
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the signal handlers were installed
        return 130
    return 0
