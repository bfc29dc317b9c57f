"""EncoderConfig: validated once, taken by ColbertEncoder, and the one source of every encoder flag and
environment variable of `encode`, `rerank`, `encode-parquet` and `serve`."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from colbert_onnx import ColbertEncoder, DeviceUnavailableError, EncoderConfig, InvalidInputError
from colbert_onnx.cli import build_parser, main
from colbert_onnx.config import encoder_config_from_args
from colbert_onnx.options import env_name, flag_name
from colbert_onnx.session import SessionConfig

# One value other than the default per setting, as flag text and as the value it must become.
NON_DEFAULTS = {
    "dim": ("64", 64),
    "precision": ("int8", "int8"),
    "device": ("cuda", "cuda"),
    "threads": ("3", 3),
    "document_max_length": ("100", 100),
    "batch_size": ("5", 5),
    "max_batch_tokens": ("none", None),
    "long_documents": ("windows", "windows"),
    "window_stride": ("7", 7),
    "io_binding": ("true", True),
    "engine": ("openvino", "openvino"),
    "truncation_side": ("left", "left"),
    "enable_cpu_mem_arena": ("false", False),
    "enable_mem_pattern": ("false", False),
    "graph_optimization_level": ("basic", "basic"),
    "gpu_mem_limit": ("12345", 12345),
    "arena_extend_strategy": ("kSameAsRequested", "kSameAsRequested"),
    "denormal_as_zero": ("false", False),
}
COMMANDS = {
    "encode": ["encode", "m"],
    "rerank": ["rerank", "m", "--query", "q"],
    "encode-parquet": ["encode-parquet", "m", "in.parquet", "out.parquet"],
    "serve": ["serve", "m"],
}
BOOLEANS = {"io_binding", "enable_cpu_mem_arena", "enable_mem_pattern", "denormal_as_zero"}


def _settings() -> list[str]:
    names = [f.name for f in dataclasses.fields(EncoderConfig) if f.name != "session_options"]
    return names + [f.name for f in dataclasses.fields(SessionConfig)]


def _flags(name: str, text: str) -> list[str]:
    if name in BOOLEANS:
        return [flag_name(name) if text == "true" else "--no-" + name.replace("_", "-")]
    return [flag_name(name), text]


@pytest.fixture
def configure(monkeypatch: pytest.MonkeyPatch):
    """configure(command, *argv, environ={...}): the EncoderConfig that command would run with."""

    def run(command: str, *argv: str, environ: dict | None = None) -> EncoderConfig:
        for name in _settings():
            monkeypatch.delenv(env_name(name), raising=False)
        for key, value in (environ or {}).items():
            monkeypatch.setenv(key, value)
        args = build_parser().parse_args([*COMMANDS[command], *argv])
        if command == "serve":
            from colbert_onnx.server.options import config_from_args

            return config_from_args(args).encoder
        return encoder_config_from_args(args)

    return run


def _value(config: EncoderConfig, name: str):
    return getattr(config.session_options if name in SessionConfig.__dataclass_fields__ else config, name)


def test_the_table_covers_every_setting() -> None:
    assert sorted(NON_DEFAULTS) == sorted(_settings())


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_setting_has_a_flag_on_every_command(configure, command: str) -> None:
    argv = [part for name, (text, _) in NON_DEFAULTS.items() for part in _flags(name, text)]
    config = configure(command, *argv)
    for name, (_, value) in NON_DEFAULTS.items():
        assert _value(config, name) == value, name


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_setting_has_an_environment_variable(configure, command: str) -> None:
    environ = {env_name(name): text for name, (text, _) in NON_DEFAULTS.items()}
    config = configure(command, environ=environ)
    for name, (_, value) in NON_DEFAULTS.items():
        assert _value(config, name) == value, env_name(name)


def test_flag_beats_variable_beats_default(configure) -> None:
    environ = {"COLBERT_ONNX_DIM": "96", "COLBERT_ONNX_BATCH_SIZE": "4"}
    config = configure("encode", "--dim", "64", environ=environ)
    assert (config.dim, config.batch_size, config.precision) == (64, 4, "fp32")


def test_an_explicit_none_flag_is_not_taken_for_no_flag(configure) -> None:
    config = configure("encode", "--max-batch-tokens", "none", environ={"COLBERT_ONNX_MAX_BATCH_TOKENS": "5"})
    assert config.max_batch_tokens is None


@pytest.mark.parametrize(("variable", "text"), [("COLBERT_ONNX_DIM", "wide"), ("COLBERT_ONNX_BATCH_SIZE", "0"),
                                                ("COLBERT_ONNX_LONG_DOCUMENTS", "chunks"),
                                                ("COLBERT_ONNX_IO_BINDING", "maybe")])
def test_a_bad_variable_is_an_error_naming_it(configure, variable: str, text: str) -> None:
    with pytest.raises(InvalidInputError, match=f"{variable}='{text}' is not valid"):
        configure("rerank", environ={variable: text})


@pytest.mark.parametrize("variable", ["COLBERT_ONNX_ENABLE_CPU_MEM_ARENA", "COLBERT_ONNX_DENORMAL_AS_ZERO"])
@pytest.mark.parametrize("text", ["2", "auto", "none"])
def test_a_setting_without_auto_never_offers_auto(configure, variable: str, text: str) -> None:
    with pytest.raises(InvalidInputError, match=f"{variable}='{text}' is not valid") as info:
        configure("rerank", environ={variable: text})
    assert "auto" not in str(info.value).split("is not valid")[1]


def test_the_cli_reports_a_bad_variable_and_exits_2(toy_model_dir, monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLBERT_ONNX_THREADS", "-1")
    assert main(["rerank", str(toy_model_dir), "--query", "q", "-d", "x"]) == 2
    assert "COLBERT_ONNX_THREADS='-1' is not valid: threads must be a positive int" in capsys.readouterr().err


def test_serve_reports_a_bad_variable_and_exits_2(tmp_path, monkeypatch, capsys) -> None:
    pytest.importorskip("fastapi", reason="serve needs the [server] extra")
    monkeypatch.setenv("COLBERT_ONNX_DEVICE", "tpu")
    assert main(["serve", str(tmp_path)]) == 2
    assert "COLBERT_ONNX_DEVICE='tpu' is not valid" in capsys.readouterr().err


@pytest.mark.parametrize(("options", "error", "message"), [
    ({"batch_size": 0}, InvalidInputError, "batch_size must be a positive int"),
    ({"max_batch_tokens": -1}, InvalidInputError, "max_batch_tokens"),
    ({"threads": 1.5}, InvalidInputError, "threads"),
    ({"threads": 1025}, InvalidInputError, "threads=1025 is more threads than any CPU runs at once; at most 1024"),
    ({"threads": 10**20}, InvalidInputError, "at most 1024"),
    ({"document_max_length": 3}, InvalidInputError, "document_max_length must be > 3"),
    ({"window_stride": 0}, InvalidInputError, "window_stride"),
    ({"long_documents": "chunks"}, InvalidInputError, "long_documents must be one of truncate, windows"),
    ({"truncation_side": "Left"}, InvalidInputError, "truncation_side must be one of right, left, got 'Left'"),
    ({"io_binding": "yes"}, InvalidInputError, "io_binding must be True, False or None"),
    ({"device": "tpu"}, DeviceUnavailableError, "unknown device 'tpu'"),
    ({"session_options": {"gpu_mem_limit": 1}}, InvalidInputError, "session_options must be a SessionConfig"),
])
def test_bad_values_are_refused_on_construction_naming_the_field(options: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        EncoderConfig(**options)


def test_the_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        EncoderConfig().dim = 64  # type: ignore[misc]


def test_keyword_options_replace_the_config_fields(toy_model_dir) -> None:
    encoder = ColbertEncoder(toy_model_dir, EncoderConfig(dim=64, batch_size=3), batch_size=2)
    assert (encoder.dim, encoder.batch_size) == (64, 2)
    assert encoder.config.document_max_length == 8192  # the manifest's, filled in
    same = ColbertEncoder(toy_model_dir, dim=64, batch_size=2)
    np.testing.assert_array_equal(encoder.encode_documents(["Berlin"])[0], same.encode_documents(["Berlin"])[0])


def test_an_unknown_option_names_the_known_ones(toy_model_dir) -> None:
    with pytest.raises(InvalidInputError, match="unexpected keyword argument 'dimension'; the encoder options are dim"):
        ColbertEncoder(toy_model_dir, dimension=64)


def test_the_folder_checks_what_only_it_knows(toy_model_dir) -> None:
    with pytest.raises(InvalidInputError, match="exceeds the 8194 positions"):
        ColbertEncoder(toy_model_dir, document_max_length=9000)
    with pytest.raises(InvalidInputError, match="window_stride=50 exceeds the window body of 17 tokens"):
        ColbertEncoder(toy_model_dir, document_max_length=20, long_documents="windows", window_stride=50)


def test_a_window_stride_without_windows_is_refused_not_ignored(toy_model_dir) -> None:
    with pytest.raises(InvalidInputError, match="window_stride=7 applies to long_documents='windows'"):
        ColbertEncoder(toy_model_dir, window_stride=7)


def test_the_encoders_own_config_opens_the_folder_again(toy_model_dir) -> None:
    for options in ({}, {"long_documents": "windows", "document_max_length": 64}):
        encoder = ColbertEncoder(toy_model_dir, **options)
        assert ColbertEncoder(toy_model_dir, encoder.config).config == encoder.config


def test_a_window_length_over_the_trained_positions_says_it_is_the_window_length(toy_model_dir) -> None:
    with pytest.raises(InvalidInputError, match="exceeds the 8194 positions.*length of one window"):
        ColbertEncoder(toy_model_dir, long_documents="windows", document_max_length=10**5)


@pytest.mark.parametrize("integer", [np.int64, np.int32, np.uint16])
def test_numpy_ints_are_taken_as_the_ints_they_stand_for_in_session_options_too(integer) -> None:
    session = SessionConfig(gpu_mem_limit=integer(4096))
    assert session.gpu_mem_limit == 4096 and type(session.gpu_mem_limit) is int
    config = EncoderConfig(batch_size=integer(7), session_options=session)
    assert type(config.batch_size) is int and config.session_options.gpu_mem_limit == 4096


@pytest.mark.parametrize(("variable", "text", "refusal"), [
    ("COLBERT_ONNX_DIM", "32", "dim 32 is not in"),
    ("COLBERT_ONNX_PRECISION", "FP32", "unknown precision 'FP32'"),
    ("COLBERT_ONNX_WINDOW_STRIDE", "5", "window_stride=5 applies to long_documents='windows'"),
    ("COLBERT_ONNX_DOCUMENT_MAX_LENGTH", "99999", "document_max_length=99999 exceeds"),
])
def test_a_refusal_of_a_setting_from_the_environment_names_the_variable(toy_model_dir, monkeypatch, capsys, variable,
                                                                        text, refusal) -> None:
    monkeypatch.setenv(variable, text)
    assert main(["rerank", str(toy_model_dir), "--query", "q", "-d", "x"]) == 2
    err = capsys.readouterr().err
    assert refusal in err and f"(settings from the environment: {variable}='{text}')" in err


def test_a_setting_given_as_a_flag_is_not_blamed_on_the_environment(toy_model_dir, monkeypatch, capsys) -> None:
    monkeypatch.setenv("COLBERT_ONNX_DIM", "96")
    assert main(["rerank", str(toy_model_dir), "--query", "q", "-d", "x", "--dim", "32"]) == 2
    assert "environment" not in capsys.readouterr().err


def test_a_command_without_encoder_options_does_not_name_encoder_variables(monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setenv("COLBERT_ONNX_DIM", "32")
    assert main(["verify", str(tmp_path / "missing")]) == 2
    assert "environment" not in capsys.readouterr().err
