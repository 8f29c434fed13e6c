"""Log record fields for calls, and the two line formats of the command line: text and JSON.

Log lines about a call carry ``request_id`` and ``trace_id`` as record attributes
(``extra=``), so a log shipper can join them with the trace of the same call. The
package itself never installs a handler; ``configure_logging`` is for the CLI.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any, Literal

LogFormat = Literal["text", "json"]

#: Attributes every LogRecord has; anything else on a record came in through ``extra=``.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"


def trace_id(traceparent: object) -> str | None:
    """The trace id in a W3C ``traceparent`` header (``00-<trace id>-<span id>-<flags>``)."""
    if isinstance(traceparent, str) and len(traceparent) >= 55 and traceparent[2] == "-":
        return traceparent[3:35]
    return None


def call_extra(request_id: object, traceparent: object, **fields: object) -> dict[str, object]:
    """``extra=`` for a log line about one call or event: its request id and trace id."""
    return {"request_id": request_id, "trace_id": trace_id(traceparent), **fields}


def _extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _RECORD_ATTRIBUTES}


class TextFormatter(logging.Formatter):
    """One line: time, level, logger, message, then any ``extra=`` fields as ``key=value``."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{k}={v}" for k, v in _extra_fields(record).items() if v is not None)
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # keep a traceback below the fields
        return f"{head} {fields}{newline}{rest}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers.

    Keys: ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger``, ``message``,
    every ``extra=`` field (such as ``request_id`` and ``trace_id``), and ``exception``
    with the formatted traceback when there is one. Non-ASCII text is escaped, so a line
    is valid UTF-8 whatever a peer sent.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc_iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extra_fields(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


def _utc_iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def configure_logging(level: str, log_format: LogFormat = "text") -> None:
    """Send every log line to stderr in ``log_format``, the package's at ``level``.

    Other libraries' loggers (uvicorn's included) log at WARNING and above, unless
    ``level`` is DEBUG.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    numeric = logging.getLevelName(level.upper())
    root.setLevel(logging.DEBUG if numeric == logging.DEBUG else logging.WARNING)
    logging.getLogger("autogen_http_runtime").setLevel(numeric)


class OncePerKind:
    """A log line at ``level`` the first time for its kind, at DEBUG after: for failures that
    repeat with every message once they start (a store down, a type nobody registered).

    Args:
        kinds: How many kinds are remembered; past it, every line goes to DEBUG, so a peer
            sending endless new kinds cannot grow the set.
    """

    def __init__(self, logger: logging.Logger, level: int, *, kinds: int) -> None:
        self._log = logger
        self._level = level
        self._max_kinds = kinds
        self._seen: set[object] = set()

    def log(self, kind: object, message: str, *args: object) -> None:
        if kind in self._seen or len(self._seen) >= self._max_kinds:
            self._log.debug(message, *args)
            return
        self._seen.add(kind)
        self._log.log(self._level, message + " (more like it are logged at DEBUG)", *args)


class Throttled:
    """One kind of log line a peer can cause at will (a refused handshake, a denied action):
    at WARNING at most once per ``interval`` seconds, the rest at DEBUG, so that a flood of
    them cannot flood the log. Each WARNING after the first says how many went to DEBUG.

    Args:
        keys: How many keys (identities, say) get a WARNING of their own within an interval;
            past it, keys share one.
    """

    def __init__(
        self,
        logger: logging.Logger,
        interval: float = 60.0,
        *,
        keys: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._interval = interval
        self._max_keys = keys
        self._clock = clock
        #: key -> (when its next WARNING is allowed, lines logged at DEBUG since its last WARNING)
        self._windows: dict[object, tuple[float, int]] = {}

    def warning(self, message: str, *args: object, key: object = None, **kwargs: Any) -> None:
        now = self._clock()
        if key not in self._windows and len(self._windows) >= self._max_keys:
            self._windows = {k: w for k, w in self._windows.items() if w[0] > now or w[1]}
            if len(self._windows) >= self._max_keys:
                key = None
        due, quiet = self._windows.get(key, (now, 0))
        if now < due:
            self._windows[key] = (due, quiet + 1)
            if self._log.isEnabledFor(logging.DEBUG):
                self._log.debug(message, *args, **kwargs)
            return
        self._windows[key] = (now + self._interval, 0)
        if quiet:
            message += f" ({quiet} more like it in the last {self._interval:g} s were logged at DEBUG)"
        else:
            message += f" (more like it within {self._interval:g} s are logged at DEBUG)"
        self._log.warning(message, *args, **kwargs)
