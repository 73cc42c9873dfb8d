"""Durations and memory sizes in Flink's syntax.

Durations follow Flink's TimeUtils: an integer and an optional unit, with or
without a space: `5 ms`, `2 s`, `1 min`, `500us`. A bare number is milliseconds.
Sizes follow Flink's MemorySize: `64 mb`, `512kb`, `1g`; a bare number is bytes;
units are powers of 1024.
"""

from __future__ import annotations

import re

_DURATION_UNITS: dict[str, float] = {}
for _names, _seconds in (
    (("d", "day", "days"), 86400.0),
    (("h", "hour", "hours"), 3600.0),
    (("min", "m", "minute", "minutes"), 60.0),
    (("s", "sec", "secs", "second", "seconds"), 1.0),
    (("ms", "milli", "millis", "millisecond", "milliseconds"), 1e-3),
    (("us", "µs", "micro", "micros", "microsecond", "microseconds"), 1e-6),
    (("ns", "nano", "nanos", "nanosecond", "nanoseconds"), 1e-9),
):
    for _name in _names:
        _DURATION_UNITS[_name] = _seconds

_SIZE_UNITS = {
    "b": 1, "bytes": 1,
    "k": 1 << 10, "kb": 1 << 10, "kibibytes": 1 << 10,
    "m": 1 << 20, "mb": 1 << 20, "mebibytes": 1 << 20,
    "g": 1 << 30, "gb": 1 << 30, "gibibytes": 1 << 30,
    "t": 1 << 40, "tb": 1 << 40, "tebibytes": 1 << 40,
}  # fmt: skip

_AMOUNT = re.compile(r"^\s*([0-9]+)\s*([a-zA-Zµ]*)\s*$")  # ASCII digits only, as Flink

DURATION_SYNTAX = "an integer with an optional unit (ns, us, ms, s, min, h, d), e.g. '5 ms' or '2 s'"
SIZE_SYNTAX = "an integer with an optional unit (b, kb, mb, gb, tb), e.g. '64 mb'"


def parse_duration(text: str) -> float:
    """Seconds; raises ValueError for anything Flink would not accept."""
    match = _AMOUNT.match(str(text))
    unit = match.group(2).lower() if match else None
    if match is None or (unit and unit not in _DURATION_UNITS):
        raise ValueError(f"{text!r} is not a duration: expected {DURATION_SYNTAX}")
    return int(match.group(1)) * _DURATION_UNITS[unit or "ms"]


def parse_size(text: str) -> int:
    """Bytes; raises ValueError for anything Flink would not accept."""
    match = _AMOUNT.match(str(text))
    unit = match.group(2).lower() if match else None
    if match is None or (unit and unit not in _SIZE_UNITS):
        raise ValueError(f"{text!r} is not a memory size: expected {SIZE_SYNTAX}")
    return int(match.group(1)) * _SIZE_UNITS[unit or "b"]


def format_duration(seconds: float) -> str:
    """The shortest exact form, e.g. 0.002 -> '2 ms', 60 -> '1 min'."""
    if seconds == 0:
        return "0 ms"
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60), ("s", 1), ("ms", 1e-3), ("us", 1e-6)):
        amount = seconds / scale
        if amount >= 1 and abs(amount - round(amount)) < 1e-9 * amount:
            return f"{round(amount)} {unit}"
    return f"{round(seconds / 1e-9)} ns"


def format_size(n: int) -> str:
    for unit, scale in (("tb", 1 << 40), ("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} b"
