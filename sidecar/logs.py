"""Structured logs: one line per event worth knowing.

    event(log, "ready", endpoint="127.0.0.1:7651", load_s=0.41)

prints, with `--log-format text` (the default):

    2026-11-27T18:47:55.921Z INFO sidecar.server event=ready endpoint=127.0.0.1:7651 load_s=0.41

and with `json`, one object per line with the same fields. Plain log calls
(warnings from libraries, exceptions) come out in the same shape, their message
as the event.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_FIELDS = "sidecar_fields"


def event(logger: logging.Logger, name: str, level: int = logging.INFO, **fields: Any) -> None:
    logger.log(level, name, extra={_FIELDS: fields})


def _record_fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
        "level": record.levelname,
        "logger": record.name,
        "event": record.getMessage(),
    }
    out.update(getattr(record, _FIELDS, {}))
    if record.exc_info:
        out["error"] = logging.Formatter().formatException(record.exc_info)
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_record_fields(record), default=str)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields = _record_fields(record)
        head = f"{fields.pop('ts')} {fields.pop('level')} {fields.pop('logger')}"
        error = fields.pop("error", None)
        line = head + " " + " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        return line + ("\n" + error if error else "")


def _text(value: Any) -> str:
    s = str(value)
    return json.dumps(s) if (not s or any(c in s for c in ' "=\n')) else s


def setup(log_format: str = "text", level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class Throttle:
    """Lets one log line through per `interval_s`; counts the ones it held back.

    For events a client can cause at will (a malformed frame, say): each is worth
    knowing about, but a hostile client must not be able to fill the disk.
    """

    def __init__(self, interval_s: float, now: Any = time.monotonic) -> None:
        self._interval_s = interval_s
        self._now = now
        self._next = -float("inf")
        self._held = 0

    def allow(self) -> int | None:
        """None: hold this one back. Otherwise: log it, with this many held back since the last."""
        t = self._now()
        if t < self._next:
            self._held += 1
            return None
        held, self._held, self._next = self._held, 0, t + self._interval_s
        return held
