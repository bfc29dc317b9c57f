"""io_binding: the IOBinding run path CUDA uses by default, exercised on the CPU provider."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pytest
from test_encoder import TEXTS as ENCODER_TEXTS

from colbert_onnx import ColbertEncoder, InvalidInputError
from colbert_onnx import session as session_module
from colbert_onnx.engines import onnxruntime_engine as engine_module
from colbert_onnx.errors import DeviceUnavailableError
from colbert_onnx.session import binding_device

TEXTS = [
    *ENCODER_TEXTS,
    "",
    "A medium-length sentence about rivers, bridges and the museums along them.",
]
LONG = " ".join(["Berlin ist die Hauptstadt Deutschlands und hat viele Museen."] * 12)


@pytest.fixture(scope="module")
def bound(toy_model_dir) -> ColbertEncoder:
    return ColbertEncoder(toy_model_dir, batch_size=2, io_binding=True)


@pytest.fixture(scope="module")
def plain(toy_model_dir) -> ColbertEncoder:
    return ColbertEncoder(toy_model_dir, batch_size=2, io_binding=False)


def _assert_same(a: list[np.ndarray], b: list[np.ndarray]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.shape == y.shape and x.dtype == y.dtype == np.float32
        np.testing.assert_allclose(x, y, atol=1e-6)


class _FakeSession:
    def __init__(self, providers: list[str], options: dict[str, dict[str, str]]) -> None:
        self._providers, self._options = providers, options

    def get_providers(self) -> list[str]:
        return self._providers

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        return self._options


def test_io_binding_defaults_to_off_on_cpu(toy_encoder):
    assert toy_encoder.io_binding is False


def test_io_binding_on_cpu_runs_through_the_binding(toy_model_dir, monkeypatch):
    calls = []
    original = engine_module.run_with_binding
    monkeypatch.setattr(engine_module, "run_with_binding", lambda *a: calls.append(a[3]) or original(*a))
    ColbertEncoder(toy_model_dir, io_binding=True).encode_queries(["Berlin"])
    ColbertEncoder(toy_model_dir).encode_queries(["Berlin"])
    assert calls == [("cpu", 0)]


def test_bound_queries_equal_plain_queries_across_batches(bound, plain):
    _assert_same(bound.encode_queries(TEXTS), plain.encode_queries(TEXTS))


def test_bound_documents_equal_plain_documents_across_padded_batches(bound, plain):
    _assert_same(bound.encode_documents(TEXTS), plain.encode_documents(TEXTS))


def test_bound_windowed_long_documents_equal_plain(toy_model_dir):
    kwargs = {"document_max_length": 48, "long_documents": "windows", "window_stride": 16, "batch_size": 3}
    texts = [LONG, "Berlin ist groß.", LONG[:200]]
    bound = ColbertEncoder(toy_model_dir, io_binding=True, **kwargs).encode_documents(texts)
    plain = ColbertEncoder(toy_model_dir, io_binding=False, **kwargs).encode_documents(texts)
    _assert_same(bound, plain)


def test_for_dim_keeps_io_binding_and_matches_plain(bound, plain):
    small = bound.for_dim(64)
    assert small.io_binding is True and small.session is bound.session
    _assert_same(small.encode_queries(TEXTS[:3]), plain.for_dim(64).encode_queries(TEXTS[:3]))


def test_repeated_bound_calls_reuse_one_session(toy_model_dir, monkeypatch):
    created = []

    class CountingSession(ort.InferenceSession):
        def __init__(self, *args, **kwargs) -> None:
            created.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(session_module.ort, "InferenceSession", CountingSession)
    encoder = ColbertEncoder(toy_model_dir, batch_size=2, io_binding=True)
    first = encoder.session
    for _ in range(3):
        encoder.encode_queries(TEXTS)
        encoder.encode_documents(TEXTS)
    assert len(created) == 1 and encoder.session is first


def test_bound_encoder_shared_by_four_threads_gives_serial_results(toy_model_dir):
    encoder = ColbertEncoder(toy_model_dir, threads=1, batch_size=2, io_binding=True)
    serial_docs = [encoder.encode_documents([t, TEXTS[0]]) for t in TEXTS]
    serial_queries = [encoder.encode_queries([t]) for t in TEXTS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        docs = list(pool.map(lambda t: encoder.encode_documents([t, TEXTS[0]]), TEXTS * 2))
        queries = list(pool.map(lambda t: encoder.encode_queries([t]), TEXTS * 2))
    for got, want in zip(docs, serial_docs * 2, strict=True):
        _assert_same(got, want)
    for got, want in zip(queries, serial_queries * 2, strict=True):
        _assert_same(got, want)


@pytest.mark.parametrize("bad", ["yes", 1, 0, "cuda"])
def test_non_bool_io_binding_raises_invalid_input(toy_model_dir, bad):
    with pytest.raises(InvalidInputError, match="io_binding must be True, False or None"):
        ColbertEncoder(toy_model_dir, io_binding=bad)


def test_binding_device_comes_from_the_session_provider():
    cuda_options = {"CUDAExecutionProvider": {"device_id": "1"}, "CPUExecutionProvider": {}}
    cuda = _FakeSession(["CUDAExecutionProvider", "CPUExecutionProvider"], cuda_options)
    cpu = _FakeSession(["CPUExecutionProvider"], {"CPUExecutionProvider": {}})
    assert binding_device(cuda) == ("cuda", 1)
    assert binding_device(cpu) == ("cpu", 0)


def test_binding_on_unsupported_provider_raises_device_unavailable():
    with pytest.raises(DeviceUnavailableError, match="io_binding supports .* not DmlExecutionProvider"):
        binding_device(_FakeSession(["DmlExecutionProvider", "CPUExecutionProvider"], {}))


@pytest.mark.filterwarnings("ignore:Specified provider")
@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(),
                    reason="a real CUDA provider initializes, so the silent CPU fallback cannot be staged")
def test_cuda_silently_falling_back_to_cpu_raises_device_unavailable(toy_model_dir, monkeypatch):
    # A CUDA build whose provider fails to initialize: onnxruntime warns and runs on the CPU.
    monkeypatch.setattr(
        session_module.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    with pytest.raises(DeviceUnavailableError, match="could not initialize CUDAExecutionProvider"):
        ColbertEncoder(toy_model_dir, device="cuda")
