"""HTTP transport of `serve`: request bodies sent with a Content-Encoding, and HEAD (RFC 9110 8.4, 9.3.2, 15.5.16)."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the HTTP server needs the [server] extra (pip install '.[server]')")
httpx = pytest.importorskip("httpx", reason="the server tests talk HTTP with httpx ([server] extra)")

from live_server import TLS, running_server  # noqa: E402

from colbert_onnx.server import ServerConfig  # noqa: E402
from colbert_onnx.server.compat import ENDPOINTS as COMPAT_ENDPOINTS  # noqa: E402
from colbert_onnx.server.content_coding import UndecodableBody, decode_body  # noqa: E402

KEY = "transport-key"
MAX_BODY = 20_000
BODIES = {
    "/v1/multi-vector": {"input": ["Berlin is the capital of Germany.", "Paris"], "input_type": "document"},
    "/v1/rerank": {"query": "capital of Germany", "documents": ["Berlin is the capital.", "Rome is old."]},
    "/v2/rerank": {"model": "jina-colbert-v2", "query": "capital", "documents": ["Berlin", "Rome"]},
    "/rerank": {"query": "capital", "texts": ["Berlin", "Rome"]},
    "/score": {"text_1": "capital", "text_2": ["Berlin", "Rome"]},
    "/v1/score": {"text_1": "capital", "text_2": ["Berlin", "Rome"]},
    "/pooling": {"input": ["Berlin"], "task": "token_embed"},
}


def _raw_deflate(data: bytes) -> bytes:
    packer = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


def _gzip_members(data: bytes) -> bytes:
    half = len(data) // 2
    return gzip.compress(data[:half]) + gzip.compress(data[half:])


CODINGS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "GZip": gzip.compress,
    "deflate": zlib.compress,  # the zlib format, as RFC 9110 names it
    "deflate (raw, as some clients send it)": _raw_deflate,
    "gzip (two members)": _gzip_members,
    "identity": lambda data: data,
    "deflate, gzip": lambda data: gzip.compress(zlib.compress(data)),
    "gzip, identity": gzip.compress,
}


def _header(coding: str) -> str:
    return coding.split(" (")[0]


@pytest.fixture(scope="module")
def base(toy_model_dir: Path) -> Iterator[str]:
    with running_server(ServerConfig(model_dir=toy_model_dir, max_body_bytes=MAX_BODY, api_key=KEY)) as url:
        yield url


def post(base: str, path: str, content: bytes, **headers: str) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", **headers}
    return httpx.post(f"{base}{path}", content=content, headers=headers, timeout=60, verify=TLS)


def _comparable(answer: dict | list) -> dict | list:
    """The answer less what differs between any two responses (Cohere's and vLLM's `id`, vLLM's `created`)."""
    if isinstance(answer, dict):
        return {k: v for k, v in answer.items() if k not in ("id", "created")}
    return answer


@pytest.mark.parametrize("coding", list(CODINGS))
@pytest.mark.parametrize("path", list(BODIES))
def test_an_encoded_body_gets_the_answer_of_the_plain_one(base: str, path: str, coding: str) -> None:
    plain = json.dumps(BODIES[path]).encode()
    expected = post(base, path, plain)
    got = post(base, path, CODINGS[coding](plain), **{"Content-Encoding": _header(coding)})
    assert expected.status_code == got.status_code == 200, got.text
    assert _comparable(got.json()) == _comparable(expected.json())


def test_every_model_endpoint_is_covered() -> None:
    assert set(BODIES) == {"/v1/multi-vector", "/v1/rerank", *COMPAT_ENDPOINTS}


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, br", "x-custom"])
@pytest.mark.parametrize("path", ["/v1/multi-vector", "/v1/rerank", "/v1/embeddings"])
def test_a_coding_the_server_cannot_decode_is_a_415_naming_it_and_the_accepted_ones(base, path, coding) -> None:
    r = post(base, path, b"\x28\xb5\x2f\xfd-not-decodable", **{"Content-Encoding": coding})
    assert r.status_code == 415, r.text
    unknown = [c.strip() for c in coding.split(",") if c.strip() != "gzip"]
    assert all(repr(c) in r.json()["detail"] for c in unknown), r.text
    assert r.headers["Accept-Encoding"] == "gzip, deflate, identity"


@pytest.mark.parametrize(
    ("coding", "content"),
    [
        ("gzip", b'{"input": ["not compressed at all"]}'),
        ("gzip", gzip.compress(b'{"input": ["cut short"]}')[:-6]),
        ("gzip", gzip.compress(b'{"input": ["x"]}') + b"trailing bytes"),
        ("deflate", gzip.compress(b'{"input": ["gzip sent as deflate"]}')),
        ("gzip", b""),
    ],
    ids=["plain", "truncated", "trailing", "wrong-coding", "empty"],
)
def test_a_body_that_is_not_what_its_coding_says_is_a_400_naming_the_coding(base, coding, content) -> None:
    r = post(base, "/v1/multi-vector", content, **{"Content-Encoding": coding})
    assert r.status_code == 400, r.text
    assert f"not valid {coding} data" in r.json()["detail"]


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
@pytest.mark.parametrize("decoded_bytes", [MAX_BODY + 1, 50 * MAX_BODY, 500 * MAX_BODY])  # deflate: <= ~1030:1
def test_a_small_body_that_decodes_past_the_limit_is_a_413(base, coding, decoded_bytes) -> None:
    body = b'{"input": ["' + b"a" * (decoded_bytes - 14) + b'"]}'
    content = CODINGS[coding](body)
    assert len(content) < MAX_BODY
    r = post(base, "/v1/multi-vector", content, **{"Content-Encoding": coding})
    assert r.status_code == 413, r.text
    answer = r.json()
    assert answer["limit"] == "max_body_bytes" and answer["value"] > answer["max"] == MAX_BODY


def test_a_compressed_body_over_the_limit_is_a_413_before_decoding(base) -> None:
    content = bytes(range(256)) * (MAX_BODY // 200)  # incompressible: over the limit as sent
    r = post(base, "/v1/multi-vector", content, **{"Content-Encoding": "gzip"})
    assert r.status_code == 413 and r.json()["limit"] == "max_body_bytes"


def test_a_chunked_gzip_body_is_decoded(base) -> None:
    content = gzip.compress(json.dumps(BODIES["/v1/multi-vector"]).encode())
    chunks = iter([content[:10], content[10:40], content[40:]])
    headers = {"Authorization": f"Bearer {KEY}", "Content-Encoding": "gzip"}
    r = httpx.post(f"{base}/v1/multi-vector", content=chunks, headers=headers, timeout=60)
    assert r.status_code == 200 and len(r.json()["data"]) == 2


@pytest.mark.parametrize("path", ["/health", "/ready", "/v1/models", "/openapi.json"])
def test_head_answers_as_get_without_a_body(base, path) -> None:
    auth = {"Authorization": f"Bearer {KEY}"}
    got, head = httpx.get(f"{base}{path}", headers=auth), httpx.head(f"{base}{path}", headers=auth)
    assert head.status_code == got.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == got.headers["content-type"]
    assert head.headers["content-length"] == str(len(got.content))


def test_head_is_authorized_as_get(base) -> None:
    assert httpx.head(f"{base}/v1/models").status_code == 401


def test_head_on_a_post_only_endpoint_is_a_405_allowing_post(base) -> None:
    r = httpx.head(f"{base}/v1/rerank", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.content == b""


@pytest.mark.parametrize("path", ["/health", "/v1/models"])
def test_a_405_on_a_get_endpoint_allows_get_and_head(base, path) -> None:
    r = httpx.put(f"{base}{path}", headers={"Authorization": f"Bearer {KEY}"})
    assert r.status_code == 405
    assert sorted(m.strip() for m in r.headers["allow"].split(",")) == ["GET", "HEAD"]


@pytest.mark.parametrize("size", [1, 65535, 65536, 65537, 3 * 65536 + 7, 1_000_003])
@pytest.mark.parametrize("coding", ["gzip", "deflate", "deflate (raw, as some clients send it)"])
@pytest.mark.parametrize("kind", ["zeros", "json"])
def test_decoding_returns_every_byte_in_64k_steps_and_refuses_a_cut_stream(size, coding, kind) -> None:
    """Highly compressible bodies end with a few input bytes that decode to many output steps."""
    plain = bytes(size) if kind == "zeros" else (b'{"input": ["Berlin is the capital."]}' * size)[:size]
    sent = CODINGS[coding](plain)
    assert decode_body(sent, [_header(coding)], size) == plain
    with pytest.raises(UndecodableBody):
        decode_body(sent[:-3], [_header(coding)], size)
