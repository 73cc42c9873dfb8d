"""The command line's parsing: sweeps, and bad arguments refused with exit code 2
and a message that says what is wrong (before anything starts)."""

from __future__ import annotations

import pytest

from sidecar.bench.cli import DEFAULT_MODEL_URI, _parser, main, plan_from
from sidecar.bench.sweep import parse_sweep


def test_sweeps_of_in_flight_and_of_rate():
    assert parse_sweep("in-flight=1,8,64,256") == ("in-flight", [1, 8, 64, 256])
    assert parse_sweep("rate=1000, 2500.5") == ("rate", [1000.0, 2500.5])


@pytest.mark.parametrize("text, message", [
    ("streams=1,2", "KEY one of in-flight, rate"),
    ("in-flight", "KEY one of in-flight, rate"),
    ("in-flight=1,x", "'x' is not a whole number"),
    ("in-flight=1.5", "'1.5' is not a whole number"),
    ("rate=100,abc", "'abc' is not a number"),
    ("rate=0", "'0' must be positive"),
    ("in-flight=", "'' is not a whole number"),
    ("in-flight=4,4", "repeated"),
])
def test_bad_sweeps_say_why(text, message):
    with pytest.raises(ValueError, match=message):
        parse_sweep(text)


def plan(*argv: str):
    return plan_from(_parser().parse_args(list(argv)))


def test_defaults_and_a_sweep_make_one_load_per_value():
    p = plan()
    assert p.model_uri == DEFAULT_MODEL_URI and p.baselines and p.target is None
    assert [(lo.in_flight, lo.rate, lo.packed, lo.seconds) for lo in p.loads] == [(64, None, True, 5.0)]
    p = plan("--sweep", "rate=100,200", "--unpacked", "--count", "500", "--streams", "2")
    assert [(lo.rate, lo.in_flight, lo.packed, lo.count, lo.seconds, lo.streams) for lo in p.loads] == [
        (100.0, None, False, 500, None, 2), (200.0, None, False, 500, None, 2)]
    assert not plan("--target", "127.0.0.1:7651").baselines  # not on by default against a running server
    assert plan("--target", "127.0.0.1:7651", "--baselines").baselines


@pytest.mark.parametrize("argv, message", [
    (["--sweep", "foo=1"], "KEY one of in-flight, rate"),
    (["--in-flight", "8", "--sweep", "in-flight=1,2"], "sets --in-flight; give one or the other"),
    (["--rate", "100", "--in-flight", "8"], "not allowed with argument"),
    (["--seconds", "2", "--count", "8"], "not allowed with argument"),
    (["--in-flight", "2", "--streams", "4"], "must be at least --streams"),
    (["--seconds", "0"], "--seconds must be positive"),
    (["--server-pid", "42"], "--server-pid goes with --target"),
    (["--target", "nowhere"], "--target: endpoint 'nowhere' is neither host:port"),
    (["--target", "127.0.0.1:1", "--model-uri", "mock:"], "not with --target"),
    (["--check", "--rate", "100"], "--check runs its own cases: --rate does not apply"),
    (["--in-flight", "many"], "invalid int value"),
])
def test_bad_arguments_exit_2_saying_why(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: gpu-sidecar bench") and message in err, err
