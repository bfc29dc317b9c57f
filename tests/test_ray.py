"""Corpus encoding on Ray Data (colbert_onnx.ray) on a 2-CPU local cluster bound to 127.0.0.1 only.

One cluster for the module; each pipeline runs once and several tests read its output. Vectors read
back from Parquet with plain pyarrow must be bit-identical to a direct ``encode_documents``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="needs the ray extra (pip install '.[ray]')")
pytest.importorskip("ray.data", reason="needs Ray Data (pip install '.[ray]')")
pa = pytest.importorskip("pyarrow", reason="needs the arrow extra (pip install '.[arrow]')")
import pyarrow.parquet as pq  # noqa: E402

from colbert_onnx import EncoderConfig, InvalidInputError, UnsupportedDimError  # noqa: E402
from colbert_onnx import arrow as ca  # noqa: E402
from colbert_onnx import ray as cr  # noqa: E402
from colbert_onnx.cli import main  # noqa: E402
from colbert_onnx.session import SessionConfig  # noqa: E402

OBJECT_STORE_BYTES = 96 * 1024 * 1024


def corpus() -> list[str]:
    """A few hundred documents: empty, blank, punctuation-only, one long, the rest short and varied."""
    words = "Berlin Paris 東京 Madrid cat sleeps capital river bridge music night train data vector".split()
    rng = np.random.default_rng(17)
    texts = ["", "   ", "!?!...,;", " ".join(["long"] * 900)]
    texts += [" ".join(rng.choice(words, size=int(rng.integers(1, 40)))) for _ in range(296)]
    return texts


TEXTS = corpus()


class InfoEncoder(cr.DocumentEncoder):
    """DocumentEncoder that also records which actor encoded each row and with how many onnxruntime threads."""

    def __call__(self, batch):
        out = super().__call__(batch)
        n = out.num_rows
        out = out.append_column("pid", pa.array([self.pid] * n, pa.int64()))
        return out.append_column("threads", pa.array([self.encoder.config.threads or 0] * n, pa.int64()))


@pytest.fixture(scope="module")
def cluster():
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # actors get InfoEncoder by value
    cr.init_local_cluster(num_cpus=2, object_store_memory=OBJECT_STORE_BYTES, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def texts_parquet(tmp_path_factory):
    path = tmp_path_factory.mktemp("ray-in") / "texts.parquet"
    pq.write_table(pa.table({"id": np.arange(len(TEXTS), dtype=np.int64) * 7, "text": TEXTS}), path)
    assert pq.ParquetFile(path).metadata.num_row_groups == 1  # one block: the tiny-input trap
    return path


@pytest.fixture(scope="module")
def direct(toy_encoder):
    return toy_encoder.encode_documents(TEXTS, output="float16")


@pytest.fixture(scope="module")
def two_actor_shards(cluster, toy_model_dir, texts_parquet, tmp_path_factory):
    """The corpus through 2 actors (0.5 CPU each), written by Ray's workers as Parquet shards."""
    out = tmp_path_factory.mktemp("ray-out") / "shards"
    ds = ray.data.read_parquet(str(texts_parquet))
    encoded = cr.encode_documents(ds, toy_model_dir, actors=2, batch_size=32, encoder_class=InfoEncoder)
    encoded.write_parquet(str(out), **ca.parquet_options("float16", ["id"]))
    return out


CLI_WARNINGS: list[warnings.WarningMessage] = []


@pytest.fixture(scope="module")
def one_actor_cli_file(cluster, toy_model_dir, texts_parquet, tmp_path_factory):
    """The corpus through `colbert-onnx encode-parquet --actors 1` (the running session, 1 CPU); the warnings it
    raised are kept in CLI_WARNINGS."""
    out = tmp_path_factory.mktemp("ray-cli") / "vectors.parquet"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["encode-parquet", str(toy_model_dir), str(texts_parquet), str(out), "--actors", "1",
                     "--no-progress"]) == 0
    CLI_WARNINGS.extend(caught)
    return out


def _by_id(table) -> dict[int, np.ndarray]:
    return dict(zip(table["id"].to_pylist(), ca.to_documents(table), strict=True))


def test_every_node_reports_the_loopback_address(cluster) -> None:
    nodes = ray.nodes()
    assert nodes and all(n["NodeManagerAddress"] == "127.0.0.1" for n in nodes)


def test_one_actor_writes_the_direct_vectors_in_input_order(one_actor_cli_file, texts_parquet, direct) -> None:
    table = pq.read_table(one_actor_cli_file)
    assert table["id"].to_pylist() == pq.read_table(texts_parquet)["id"].to_pylist()
    got = ca.to_documents(table)
    assert all(g.dtype == np.float16 and np.array_equal(g, w) for g, w in zip(got, direct, strict=True))


def test_encode_parquet_calls_no_deprecated_ray_data_api(one_actor_cli_file) -> None:
    """A Ray Data call deprecated in the tested version is removed in a later one that the extra allows. Ray points
    such a warning at its caller; its context.py warns about its own renamed settings whoever builds a context."""
    package = os.path.dirname(cr.__file__)
    ours = [f"{w.filename}:{w.lineno}: {w.message}" for w in CLI_WARNINGS
            if issubclass(w.category, DeprecationWarning) and w.filename.startswith(package)]
    assert not ours, ours


def test_one_actor_file_equals_the_one_process_file(one_actor_cli_file, toy_encoder, texts_parquet,
                                                    tmp_path) -> None:
    ca.encode_parquet(toy_encoder, texts_parquet, tmp_path / "direct.parquet")
    direct_table = pq.read_table(tmp_path / "direct.parquet")
    ray_table = pq.read_table(one_actor_cli_file)
    assert ray_table.schema.equals(direct_table.schema, check_metadata=True)
    assert ray_table.equals(direct_table)


def test_two_actors_write_the_direct_vectors_keyed_by_id(two_actor_shards, direct) -> None:
    table = pq.read_table(two_actor_shards)  # plain pyarrow over Ray's shard folder
    got = _by_id(table)
    assert sorted(got) == [7 * i for i in range(len(TEXTS))]
    assert all(np.array_equal(got[7 * i], w) for i, w in enumerate(direct))


def test_a_single_block_input_is_split_so_both_actors_work(two_actor_shards) -> None:
    assert len(set(pq.read_table(two_actor_shards)["pid"].to_pylist())) == 2


def test_actor_threads_follow_the_cpus_ray_assigned(two_actor_shards) -> None:
    # 0.5 CPU each -> 1 intra-op thread; onnxruntime's own default (None, recorded as 0) would use every core.
    assert set(pq.read_table(two_actor_shards)["threads"].to_pylist()) == {1}


def test_ray_output_is_arrow_lists_not_rays_tensor_type(two_actor_shards) -> None:
    schema = pq.read_schema(next(two_actor_shards.glob("*.parquet")))
    assert schema.field("vectors").type == ca.vectors_type("float16", 128)
    assert ca.read_shards(two_actor_shards, expect={"dim": 128, "output": "float16"}).num_rows == len(TEXTS)


def test_actors_claiming_every_cpu_are_refused_before_running(cluster, toy_model_dir, texts_parquet) -> None:
    ds = ray.data.read_parquet(str(texts_parquet))
    with pytest.raises(cr.RayPipelineError, match="2 actors x 1 CPUs claim 2 of the cluster's 2 CPUs"):
        cr.encode_documents(ds, toy_model_dir, actors=2, cpus_per_actor=1)


def test_the_python_api_refuses_an_output_that_is_its_input_before_ray_starts(toy_model_dir, texts_parquet,
                                                                             monkeypatch) -> None:
    monkeypatch.setattr(cr, "init_local_cluster", lambda *a, **k: pytest.fail("Ray started"))
    before = texts_parquet.read_bytes()
    with pytest.raises(InvalidInputError, match="is the input"):
        cr.encode_parquet(texts_parquet, texts_parquet, toy_model_dir)
    assert texts_parquet.read_bytes() == before


def test_actors_larger_than_any_node_are_refused() -> None:
    with pytest.raises(cr.RayPipelineError, match="exceeds the largest node's 8 CPUs"):
        cr.plan_actor_cpus(1, 12, cluster_cpus=32, node_cpus=8)


def test_default_cpus_share_the_cluster_less_the_reserve() -> None:
    assert cr.plan_actor_cpus(2, None, cluster_cpus=2, node_cpus=2) == 0.5
    assert cr.plan_actor_cpus(4, None, cluster_cpus=33, node_cpus=16) == 8


def test_bad_options_are_refused_on_the_driver(cluster, toy_model_dir, texts_parquet) -> None:
    ds = ray.data.read_parquet(str(texts_parquet))
    with pytest.raises(InvalidInputError, match="unexpected keyword argument 'dimension'"):
        cr.encode_documents(ds, toy_model_dir, dimension=64)
    with pytest.raises(UnsupportedDimError, match="dim 32 is not in"):
        cr.encode_documents(ds, toy_model_dir, dim=32)
    with pytest.raises(InvalidInputError, match="CUDA actors need gpus_per_actor"):
        cr.encode_documents(ds, toy_model_dir, device="cuda")


def test_queries_on_ray_equal_encode_queries(cluster, toy_model_dir, toy_encoder) -> None:
    queries = ["capital of Germany", "", "cats"]
    ds = ray.data.from_arrow(pa.table({"qid": [1, 2, 3], "text": queries}))
    table = pa.concat_tables(ray.get(cr.encode_queries(ds, toy_model_dir, batch_size=2).to_arrow_refs()))
    got = dict(zip(table["qid"].to_pylist(), ca.to_documents(table), strict=True))
    for qid, want in zip((1, 2, 3), toy_encoder.encode_queries(queries), strict=True):
        np.testing.assert_array_equal(got[qid], want)


def test_round_trip_into_qdrant_ranks_as_rerank(one_actor_cli_file, toy_encoder) -> None:
    qdrant_client = pytest.importorskip("qdrant_client", reason="needs the qdrant extra")
    from colbert_onnx.qdrant import ensure_collection, search, to_points

    client = qdrant_client.QdrantClient(":memory:")
    table = pq.read_table(one_actor_cli_file)
    ensure_collection(client, "corpus", ca.read_metadata(table)["dim"])
    ids, documents = table["id"].to_pylist(), ca.to_documents(table)
    for start in range(0, len(ids), 100):
        client.upsert("corpus", points=to_points(documents[start:start + 100], ids[start:start + 100]), wait=True)
    query = "capital river Berlin"
    hits = search(client, "corpus", toy_encoder, query, limit=10)
    half = [d.astype(np.float32) for d in documents]
    (q,) = toy_encoder.encode_queries([query])
    want = np.argsort(-np.array([float((q @ d.T).max(axis=1).sum()) for d in half]), kind="stable")[:10]
    assert [h["id"] for h in hits] == [ids[i] for i in want]
    reranked = toy_encoder.rerank(query, TEXTS, top_n=10)
    assert [h["id"] for h in hits] == [ids[r["index"]] for r in reranked]


def test_gpu_actors_sharing_a_card_get_their_share_of_its_memory(monkeypatch) -> None:
    monkeypatch.setattr(cr, "gpu_total_bytes", lambda gpu_id: 80 * 2**30)
    monkeypatch.setattr(ray, "get_gpu_ids", lambda: ["0"])
    config = cr._session_options(EncoderConfig(device="cuda"), None, {"GPU": 0.25, "CPU": 1.0})
    assert config.gpu_mem_limit == 20 * 2**30 and config.arena_extend_strategy == "kSameAsRequested"
    assert cr._session_options(EncoderConfig(device="cuda"), None, {"GPU": 1.0}).gpu_mem_limit is None
    assert cr._session_options(EncoderConfig(device="cpu"), None, {"GPU": 0.5}) == SessionConfig()


def test_an_explicit_gpu_limit_is_honoured(monkeypatch) -> None:
    monkeypatch.setattr(cr, "gpu_total_bytes", lambda gpu_id: 80 * 2**30)
    assert cr._session_options(EncoderConfig(device="cuda"), 123, {"GPU": 0.5}).gpu_mem_limit == 123
    mine = SessionConfig(gpu_mem_limit=456)
    assert cr._session_options(EncoderConfig(device="cuda", session_options=mine), None, {"GPU": 0.5}) is mine


def test_threads_are_the_assigned_cpus_at_least_one() -> None:
    assert cr.threads_for({"CPU": 4.0}) == 4
    assert cr.threads_for({"CPU": 0.5}) == 1
    assert cr.threads_for({}) is None


def test_import_ray_inside_the_package_is_the_real_ray() -> None:
    assert cr.ray_module() is ray and ray.__file__.endswith("ray/__init__.py")
    assert "site-packages" in ray.__file__ and not hasattr(ray, "DocumentEncoder")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_deployment_answers_concurrent_reranks_as_direct(cluster, toy_model_dir, toy_encoder) -> None:
    httpx = pytest.importorskip("httpx", reason="needs the server extra")
    pytest.importorskip("fastapi", reason="needs the server extra")
    from live_server import TLS
    from ray import serve

    from colbert_onnx.server import ServerConfig

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(cr.serve_application(ServerConfig(toy_model_dir), cpus_per_replica=0.5), name="colbert",
                  route_prefix="/")
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/ready", timeout=5).status_code != 200:
            assert time.monotonic() < deadline, "the Serve replica did not become ready in 60 s"
            time.sleep(0.2)
        documents = TEXTS[:12]
        queries = [f"query {i}: {TEXTS[10 + i]}" for i in range(8)]

        def rerank(query: str) -> dict:
            body = {"query": query, "documents": documents, "top_n": 5}
            return httpx.post(f"{url}/v1/rerank", json=body, timeout=60, verify=TLS).json()

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(rerank, queries))
    finally:
        serve.shutdown()
    for query, answer in zip(queries, answers, strict=True):
        want = toy_encoder.rerank(query, documents, top_n=5)
        assert [r["index"] for r in answer["results"]] == [w["index"] for w in want], json.dumps(answer)[:300]
        np.testing.assert_allclose([r["relevance_score"] for r in answer["results"]],
                                   [w["relevance_score"] for w in want], rtol=1e-5)
