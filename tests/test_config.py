"""Loading the configuration: defaults < YAML file < GPU_SIDECAR_* env < flags, and the errors it gives."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.config import KEYS, SidecarConfig
from sidecar.config_loader import ConfigError, env_name, flag_name, load, parse_assignment

ROOT = Path(__file__).resolve().parent.parent


def yaml_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sidecar.yaml"
    path.write_text(text)
    return path


def flag(key: str, value: str) -> tuple[str, str, str]:
    return (key, value, flag_name(key))


def refusal(**sources) -> str:
    with pytest.raises(ConfigError) as caught:
        load(**sources)
    return str(caught.value)


# --- where values come from -------------------------------------------------


def test_uses_defaults_when_nothing_is_set():
    loaded = load(env={})
    assert loaded.config == SidecarConfig()
    assert set(loaded.sources.values()) == {"default"}


def test_names_env_vars_and_flags_after_the_key():
    assert env_name("sidecar.batch.max-size") == "GPU_SIDECAR_BATCH_MAX_SIZE"
    assert env_name("sidecar.rpc.max-message-size") == "GPU_SIDECAR_RPC_MAX_MESSAGE_SIZE"
    assert flag_name("sidecar.batch.max-size") == "--batch-max-size"
    assert flag_name("sidecar.queue.max-wait") == "--queue-max-wait"


def test_flag_wins_over_env_and_file(tmp_path):
    file = yaml_file(tmp_path, "sidecar.batch.max-size: 8\n")
    loaded = load(file, {"GPU_SIDECAR_BATCH_MAX_SIZE": "16"}, [flag("sidecar.batch.max-size", "24")])
    assert loaded.config.max_batch_size == 24
    assert loaded.sources["sidecar.batch.max-size"] == "flag --batch-max-size"


def test_env_wins_over_file(tmp_path):
    file = yaml_file(tmp_path, "sidecar.batch.max-size: 8\n")
    loaded = load(file, {"GPU_SIDECAR_BATCH_MAX_SIZE": "16"})
    assert loaded.config.max_batch_size == 16
    assert loaded.sources["sidecar.batch.max-size"] == "env GPU_SIDECAR_BATCH_MAX_SIZE"


def test_later_flag_wins_over_earlier_one():
    # The CLI passes -D assignments first, then the per-key flags.
    dash_d = ("sidecar.batch.max-size", "4", "-D sidecar.batch.max-size")
    loaded = load(env={}, flags=[dash_d, flag("sidecar.batch.max-size", "6")])
    assert loaded.config.max_batch_size == 6
    assert loaded.sources["sidecar.batch.max-size"] == "flag --batch-max-size"


def test_describe_reports_each_value_with_its_source(tmp_path):
    file = yaml_file(tmp_path, "sidecar.batch.max-size: 8\nsidecar.log.format: json\n")
    loaded = load(
        file,
        {"GPU_SIDECAR_LOG_FORMAT": "text", "GPU_SIDECAR_QUEUE_MAX_WAIT": "2 s"},
        [flag("sidecar.batch.timeout", "5 ms")],
    )
    rows = {k: (value, source) for k, value, source in loaded.describe()}
    assert [k for k, _, _ in loaded.describe()] == list(KEYS)
    assert rows["sidecar.batch.max-size"] == ("8", f"file {file}")
    assert rows["sidecar.log.format"] == ("text", "env GPU_SIDECAR_LOG_FORMAT")
    assert rows["sidecar.queue.max-wait"] == ("2 s", "env GPU_SIDECAR_QUEUE_MAX_WAIT")
    assert rows["sidecar.batch.timeout"] == ("5 ms", "flag --batch-timeout")
    assert rows["sidecar.health.port"] == ("7652", "default")


def test_ignores_env_vars_without_the_prefix():
    loaded = load(env={"PATH": "/bin", "SIDECAR_BATCH_MAX_SIZE": "not read"})
    assert loaded.config == SidecarConfig()


def test_reads_nested_yaml(tmp_path):
    file = yaml_file(tmp_path, "sidecar:\n  batch:\n    max-size: 8\n    timeout: 5 ms\n  log:\n    format: json\n")
    config = load(file, {}).config
    assert (config.max_batch_size, config.batch_timeout_s, config.log_format) == (8, pytest.approx(0.005), "json")


def test_reads_flat_yaml(tmp_path):
    file = yaml_file(tmp_path, "sidecar.batch.max-size: 8\nsidecar.batch.timeout: 5 ms\nsidecar.log.format: json\n")
    config = load(file, {}).config
    assert (config.max_batch_size, config.batch_timeout_s, config.log_format) == (8, pytest.approx(0.005), "json")


def test_reads_yaml_that_mixes_nested_and_flat(tmp_path):
    file = yaml_file(tmp_path, "sidecar.batch:\n  max-size: 8\nsidecar:\n  queue.max-wait: 2 s\n")
    config = load(file, {}).config
    assert (config.max_batch_size, config.max_queue_wait_s) == (8, 2.0)


def test_reads_yaml_numbers_as_flink_would_read_the_text(tmp_path):
    # `timeout: 5` in YAML is the integer 5; like the text "5" it means 5 ms.
    file = yaml_file(tmp_path, "sidecar.batch.timeout: 5\nsidecar.rpc.max-message-size: 1048576\n")
    config = load(file, {}).config
    assert config.batch_timeout_s == pytest.approx(0.005)
    assert config.max_message_bytes == 1 << 20


def test_empty_yaml_file_leaves_defaults(tmp_path):
    assert load(yaml_file(tmp_path, "# nothing set\n"), {}).config == SidecarConfig()


def test_splits_assignment_at_the_first_equals_sign():
    assert parse_assignment(" sidecar.model.uri = mock:?base_ms=2 ") == ("sidecar.model.uri", "mock:?base_ms=2")


@pytest.mark.parametrize("text", ["sidecar.batch.max-size", "=32"])
def test_refuses_assignment_without_key_and_equals_sign(text):
    with pytest.raises(ConfigError, match="-D expects key=value"):
        parse_assignment(text)


# --- what is refused, and what the message says -----------------------------


def test_refuses_unknown_key_in_file_and_suggests_the_close_one(tmp_path):
    file = yaml_file(tmp_path, "sidecar:\n  batch:\n    max-sise: 8\n")
    message = refusal(file=file, env={})
    assert "'sidecar.batch.max-sise'" in message
    assert f"file {file}" in message
    assert "did you mean 'sidecar.batch.max-size'?" in message


def test_refuses_unknown_key_given_with_dash_d():
    message = refusal(env={}, flags=[("sidecar.batch.timout", "5 ms", "-D sidecar.batch.timout")])
    assert "'sidecar.batch.timout' (from flag -D sidecar.batch.timout)" in message
    assert "did you mean 'sidecar.batch.timeout'?" in message


def test_refuses_unknown_prefixed_env_var_and_suggests_the_close_one():
    message = refusal(env={"GPU_SIDECAR_BATCH_MAXSIZE": "8"})
    assert "unknown environment variable GPU_SIDECAR_BATCH_MAXSIZE" in message
    assert "did you mean 'GPU_SIDECAR_BATCH_MAX_SIZE'?" in message


def test_points_to_the_docs_when_nothing_is_close():
    message = refusal(env={}, flags=[("colour", "blue", "-D colour")])
    assert "docs/configuration.md" in message


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("sidecar.batch.max-size", "many", "an integer >= 1"),
        ("sidecar.batch.max-size", "1.5", "an integer >= 1"),
        ("sidecar.batch.max-size", "0", "an integer >= 1"),
        ("sidecar.model.instances", "-1", "an integer >= 1"),
        ("sidecar.health.port", "65536", "an integer >= 0 and <= 65535"),
        ("sidecar.batch.timeout", "1.5 ms", "a duration: an integer with an optional unit"),
        ("sidecar.batch.timeout", "5 parsecs", "a duration: an integer with an optional unit"),
        ("sidecar.queue.max-wait", "0 ms", "a positive duration"),
        ("sidecar.rpc.endpoint", "localhost", "host:port or unix:///absolute/path"),
        ("sidecar.rpc.endpoint", "localhost:http", "host:port or unix:///absolute/path"),
        ("sidecar.rpc.endpoint", "unix://", "host:port or unix:///absolute/path"),
        ("sidecar.log.format", "xml", "one of text, json"),
        ("sidecar.log.level", "LOUD", "one of DEBUG, INFO, WARNING, ERROR"),
        ("sidecar.rpc.max-message-size", "64 parsecs", "a positive size: an integer with an optional unit"),
        ("sidecar.rpc.max-message-size", "0", "a positive size"),
    ],
)
def test_refuses_bad_value_naming_key_value_source_and_what_is_allowed(key, value, allowed):
    message = refusal(env={}, flags=[flag(key, value)])
    assert message.startswith(f"{key}: {value!r} (from flag {flag_name(key)}) is not allowed; expected ")
    assert allowed in message


def test_names_the_env_var_as_the_source_of_a_bad_value():
    message = refusal(env={"GPU_SIDECAR_LOG_FORMAT": "xml"})
    assert "sidecar.log.format: 'xml' (from env GPU_SIDECAR_LOG_FORMAT)" in message


@pytest.mark.parametrize("text", ["sidecar.batch.max-size: 3.0\n", "sidecar.batch.max-size: true\n"])
def test_refuses_yaml_scalar_that_is_not_an_integer(tmp_path, text):
    # A YAML float or boolean must not slip through as int(3.0) or int(True).
    file = yaml_file(tmp_path, text)
    message = refusal(file=file, env={})
    assert "sidecar.batch.max-size: " in message and f"(from file {file})" in message


@pytest.mark.parametrize("text", ["- sidecar.batch.max-size\n- 8\n", "just text\n", "32\n"])
def test_refuses_yaml_that_is_not_a_mapping(tmp_path, text):
    file = yaml_file(tmp_path, text)
    assert refusal(file=file, env={}) == f"config file {file} must hold a mapping of keys to values"


def test_refuses_file_that_is_not_yaml(tmp_path):
    file = yaml_file(tmp_path, "sidecar: [unclosed\n")
    assert refusal(file=file, env={}).startswith(f"config file {file} is not valid YAML")


def test_refuses_missing_file_naming_it(tmp_path):
    missing = tmp_path / "absent.yaml"
    assert refusal(file=missing, env={}) == f"cannot read config file {missing}: No such file or directory"


def test_refuses_directory_as_config_file(tmp_path):
    assert refusal(file=tmp_path, env={}).startswith(f"cannot read config file {tmp_path}: ")


def test_refuses_batch_window_longer_than_queue_wait_naming_both_keys_and_sources(tmp_path):
    file = yaml_file(tmp_path, "sidecar.queue.max-wait: 1 s\n")
    message = refusal(file=file, env={"GPU_SIDECAR_BATCH_TIMEOUT": "2 s"})
    assert "sidecar.batch.timeout (2 s, from env GPU_SIDECAR_BATCH_TIMEOUT)" in message
    assert f"sidecar.queue.max-wait (1 s, from file {file})" in message
    assert "must not exceed" in message


def test_contradiction_with_a_default_names_the_default_as_source():
    message = refusal(env={}, flags=[flag("sidecar.batch.timeout", "2 s")])
    assert "sidecar.batch.timeout (2 s, from flag --batch-timeout)" in message
    assert "sidecar.queue.max-wait (1 s, from default)" in message


def test_accepts_batch_window_equal_to_queue_wait():
    loaded = load(env={}, flags=[flag("sidecar.batch.timeout", "1 s")])
    assert loaded.config.batch_timeout_s == loaded.config.max_queue_wait_s


def test_empty_yaml_value_is_refused_naming_the_key(tmp_path):
    file = yaml_file(tmp_path, "sidecar.model.backend:\n")
    message = refusal(file=file, env={})
    assert "sidecar.model.backend" in message and "has no value" in message and str(file) in message


def test_refuses_file_that_is_not_utf8_naming_it(tmp_path):
    file = tmp_path / "binary.yaml"
    file.write_bytes(b"\xff\xfe\x00")
    assert str(file) in refusal(file=file, env={})


# --- the real command line ---------------------------------------------------


def gpu_sidecar(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # Start from a clean slate: GPU_SIDECAR_* in the test runner's own env must not leak in.
    base = {k: v for k, v in os.environ.items() if not k.startswith("GPU_SIDECAR_")}
    return subprocess.run(
        [sys.executable, "-m", "sidecar.cli", *args],
        cwd=ROOT, env={**base, **(env or {})}, capture_output=True, text=True, timeout=60,
    )


def test_config_print_shows_every_key_with_value_and_source(tmp_path):
    file = yaml_file(tmp_path, "sidecar:\n  batch:\n    max-size: 8\n")
    result = gpu_sidecar(
        "config", "--print", "--config", str(file), "--batch-timeout", "5 ms", "-D", "sidecar.log.format=json",
        env={"GPU_SIDECAR_LOG_LEVEL": "DEBUG"},
    )
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split(None, 1)[1] for line in result.stdout.splitlines()}
    assert list(rows) == list(KEYS)
    assert rows["sidecar.batch.max-size"].split() == ["'8'", "file", str(file)]
    assert rows["sidecar.batch.timeout"].split() == ["'5", "ms'", "flag", "--batch-timeout"]
    assert rows["sidecar.log.format"].split() == ["'json'", "flag", "-D", "sidecar.log.format"]
    assert rows["sidecar.log.level"].split() == ["'DEBUG'", "env", "GPU_SIDECAR_LOG_LEVEL"]
    assert rows["sidecar.queue.max-wait"].split() == ["'1", "s'", "default"]


def test_cli_exits_2_naming_the_key_of_a_bad_value():
    result = gpu_sidecar("config", "--print", env={"GPU_SIDECAR_BATCH_MAX_SIZE": "0"})
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("gpu-sidecar: sidecar.batch.max-size: '0' (from env GPU_SIDECAR_BATCH_MAX_SIZE)")
