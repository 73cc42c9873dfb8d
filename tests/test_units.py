"""Flink's duration and memory-size syntax: what is read, what is refused, what is written back."""

from __future__ import annotations

import pytest

from sidecar.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5 ms", 0.005),
        ("5ms", 0.005),
        ("2 s", 2.0),
        ("1 min", 60.0),
        ("1 m", 60.0),  # Flink reads a bare `m` as minutes, not metres or months
        ("500us", 0.0005),
        ("500 µs", 0.0005),
        ("7 ns", 7e-9),
        ("3 h", 10800.0),
        ("1 d", 86400.0),
        ("0 ms", 0.0),
        ("  5 ms  ", 0.005),
    ],
)
def test_reads_integer_with_short_unit(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


def test_reads_bare_number_as_milliseconds():
    # Flink's TimeUtils default unit; `100` must never mean 100 seconds.
    assert parse_duration("100") == pytest.approx(0.1)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("5 milliseconds", 0.005),
        ("5 millis", 0.005),
        ("1 millisecond", 0.001),
        ("2 seconds", 2.0),
        ("2 secs", 2.0),
        ("1 minute", 60.0),
        ("3 hours", 10800.0),
        ("1 day", 86400.0),
        ("500 microseconds", 0.0005),
        ("7 nanoseconds", 7e-9),
    ],
)
def test_reads_long_unit_names(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["5 MS", "5 Ms", "2 S", "1 MIN", "3 Hours", "500US"])
def test_reads_units_in_any_case(text):
    assert parse_duration(text) == parse_duration(text.lower())


@pytest.mark.parametrize(
    "text",
    [
        "1.5 s",  # Flink durations are whole numbers of a unit: write 1500 ms
        "-5 ms",
        "5 parsecs",
        "",
        "   ",
        "ms",
        "5 m s",
        "5 ms extra",
    ],
)
def test_refuses_what_flink_would_refuse(text):
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


def test_duration_error_names_the_text_and_the_syntax():
    with pytest.raises(ValueError) as caught:
        parse_duration("5 parsecs")
    assert "'5 parsecs'" in str(caught.value)
    assert "e.g. '5 ms'" in str(caught.value)


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64 mb", 64 << 20),
        ("64mb", 64 << 20),
        ("512kb", 512 << 10),
        ("512 k", 512 << 10),
        ("1g", 1 << 30),
        ("1 gb", 1 << 30),
        ("2 tb", 2 << 40),
        ("3 mebibytes", 3 << 20),
        ("64 MB", 64 << 20),
        ("100 b", 100),
        ("100 bytes", 100),
    ],
)
def test_reads_memory_sizes_in_powers_of_1024(text, size):
    assert parse_size(text) == size


def test_reads_bare_number_as_bytes():
    assert parse_size("4096") == 4096


@pytest.mark.parametrize("text", ["1.5 mb", "-1 kb", "64 parsecs", "", "mb", "5 mib"])
def test_refuses_sizes_flink_would_refuse(text):
    with pytest.raises(ValueError, match="is not a memory size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0 ms"),
        (0.002, "2 ms"),
        (1.0, "1 s"),
        (1.5, "1500 ms"),
        (30.0, "30 s"),
        (60.0, "1 min"),
        (90.0, "90 s"),
        (3600.0, "1 h"),
        (86400.0, "1 d"),
        (0.0005, "500 us"),
        (1.5e-6, "1500 ns"),
    ],
)
def test_formats_duration_in_largest_exact_unit(seconds, text):
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    "text",
    ["5 ms", "2 s", "1 min", "500 us", "3 h", "1 d", "7 ns", "1500 ms", "90 s", "123456789 ms", "1000 ns"],
)
def test_formatted_duration_reads_back_as_the_same_time(text):
    seconds = parse_duration(text)
    shown = format_duration(seconds)
    # Seconds are floats: `1000 ns` and `1 us` may differ in the last bit.
    assert parse_duration(shown) == pytest.approx(seconds, rel=1e-12)
    assert format_duration(parse_duration(shown)) == shown


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 b"),
        (100, "100 b"),
        (1024, "1 kb"),
        (1536, "1536 b"),
        (64 << 20, "64 mb"),
        (1 << 30, "1 gb"),
        (3 << 40, "3 tb"),
        ((1 << 20) + (1 << 10), "1025 kb"),
    ],
)
def test_formats_size_in_largest_exact_unit(size, text):
    assert format_size(size) == text
    assert parse_size(text) == size
