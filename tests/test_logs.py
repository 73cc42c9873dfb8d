"""Structured log lines, text and JSON."""

from __future__ import annotations

import json
import logging

from freezegun import freeze_time

from sidecar.logs import JsonFormatter, TextFormatter, event


def capture(formatter: logging.Formatter, emit) -> str:
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    log = logging.getLogger("sidecar.test")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        emit(log)
    finally:
        log.removeHandler(handler)
    return formatter.format(records[0])


@freeze_time("2026-11-27 18:00:01.250")
def test_text_line_has_time_level_logger_event_and_fields():
    line = capture(TextFormatter(), lambda log: event(log, "drain finished", seconds=1.5, completed=True, note="a b"))
    assert line == '2026-11-27T18:00:01.250Z INFO sidecar.test event="drain finished" seconds=1.5 completed=True note="a b"'


@freeze_time("2026-11-27 18:00:01")
def test_json_line_is_one_object_with_the_same_fields():
    line = capture(JsonFormatter(), lambda log: event(log, "ready", endpoint="127.0.0.1:7651"))
    assert json.loads(line) == {
        "ts": "2026-11-27T18:00:01.000Z",
        "level": "INFO",
        "logger": "sidecar.test",
        "event": "ready",
        "endpoint": "127.0.0.1:7651",
    }


def test_plain_messages_and_exceptions_keep_the_shape():
    def emit(log):
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("backend failed %s", "x")

    record = json.loads(capture(JsonFormatter(), emit))
    assert record["event"] == "backend failed x" and record["level"] == "ERROR"
    assert "RuntimeError: boom" in record["error"]
