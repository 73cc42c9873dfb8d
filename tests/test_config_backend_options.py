"""`sidecar.backend.<name>.<option>` keys: a backend's own options, from a file or -D."""

from __future__ import annotations

import pytest

from sidecar.config_loader import ConfigError, load


def test_options_from_a_nested_file_and_from_flags_reach_their_backend(tmp_path):
    file = tmp_path / "sidecar.yaml"
    file.write_text(
        "sidecar:\n  backend:\n    timeout: 5 s\n    onnx:\n      intra_op_threads: 2\n      io_binding: true\n"
        "sidecar.backend.torch.device: cpu\n"
    )
    loaded = load(file, flags=[("sidecar.backend.onnx.intra_op_threads", "3", "-D")])
    config = loaded.config
    assert config.backend_timeout_s == 5.0  # a declared sidecar.backend.* key is still itself
    assert config.options_for("onnx") == {"intra_op_threads": "3", "io_binding": "true"}  # the flag wins
    assert config.options_for("torch") == {"device": "cpu"}
    assert config.options_for("mock") == {}


def test_an_option_must_be_one_value(tmp_path):
    file = tmp_path / "sidecar.yaml"
    file.write_text("sidecar.backend.onnx.providers: [CPUExecutionProvider]\n")
    with pytest.raises(ConfigError, match="sidecar.backend.onnx.providers .*must be a single value"):
        load(file)


def test_a_misspelt_declared_key_is_still_refused():
    with pytest.raises(ConfigError, match="unknown configuration key 'sidecar.backend.timout'"):
        load(flags=[("sidecar.backend.timout", "5 s", "-D")])
