"""ColbertEncoder: shapes, preprocessing conventions, batch independence, parity with PyTorch, bad input."""

from __future__ import annotations

import json
import shutil
import string

import numpy as np
import pytest
from folder_edits import unfingerprint
from tokenizers import Tokenizer

from colbert_onnx import (
    ColbertEncoder,
    InvalidInputError,
    ModelFolderError,
    PrecisionNotAvailableError,
    TokenizerMismatchError,
    UnsupportedDimError,
    maxsim,
)

TEXTS = [
    "Berlin is the capital of Germany.",
    "東京は日本の首都である。",
    "Wie viele Menschen leben in Berlin? Etwa 3,8 Millionen!",
    "short",
    " ".join(["Москва — столица России."] * 40),
]


@pytest.fixture(scope="module")
def tokenizer(toy_model_dir) -> Tokenizer:
    return Tokenizer.from_file(str(toy_model_dir / "tokenizer.json"))


def _ids(tokenizer: Tokenizer, *tokens: str) -> list[int]:
    return [tokenizer.token_to_id(t) for t in tokens]


@pytest.mark.parametrize("dim", [128, 96, 64])
def test_queries_are_32_vectors_of_the_head_dim(toy_model_dir, dim):
    vectors = ColbertEncoder(toy_model_dir, dim=dim).encode_queries(["What is the population of Berlin?", ""])
    assert [v.shape for v in vectors] == [(32, dim), (32, dim)]
    assert all(v.dtype == np.float32 for v in vectors)


def test_query_ids_are_framed_with_marker_and_mask_padded(toy_encoder, tokenizer):
    ids = toy_encoder.preprocessor.queries(["Berlin"])[0]
    body = tokenizer.encode("Berlin", add_special_tokens=False).ids
    bos, qm, eos, mask = _ids(tokenizer, "<s>", "[QueryMarker]", "</s>", "<mask>")
    expected = [bos, qm, *body, eos] + [mask] * (32 - len(body) - 3)
    assert ids.tolist() == expected


def test_long_query_is_truncated_to_32_tokens_ending_with_eos(toy_encoder, tokenizer):
    ids = toy_encoder.preprocessor.queries([TEXTS[4]])[0]
    body = tokenizer.encode(TEXTS[4], add_special_tokens=False).ids
    assert len(ids) == 32
    assert ids[-1] == tokenizer.token_to_id("</s>")
    assert ids[2:31].tolist() == body[:29]


def test_document_ids_are_framed_with_document_marker(toy_encoder, tokenizer):
    (ids,) = toy_encoder.preprocessor.documents(["Berlin"]).ids
    body = tokenizer.encode("Berlin", add_special_tokens=False).ids
    assert ids.tolist() == [*_ids(tokenizer, "<s>", "[DocumentMarker]"), *body, tokenizer.token_to_id("</s>")]


def test_document_is_truncated_to_max_length(toy_model_dir):
    encoder = ColbertEncoder(toy_model_dir, document_max_length=20)
    (ids,) = encoder.preprocessor.documents([TEXTS[4]]).ids
    assert len(ids) == 20 and ids[-1] == encoder.preprocessor.special.eos


def test_document_vectors_drop_padding_and_punctuation_only(toy_encoder, tokenizer):
    skip = {tokenizer.encode(p, add_special_tokens=False).ids[0] for p in string.punctuation}
    for text, vectors in zip(TEXTS, toy_encoder.encode_documents(TEXTS), strict=True):
        framed = [0, 0, *tokenizer.encode(text, add_special_tokens=False).ids, 0]
        assert vectors.shape == (sum(1 for t in framed if t not in skip), 128), text
    text = "a , b ; c ?"
    pieces = tokenizer.encode(text, add_special_tokens=False).ids
    assert any(p in skip for p in pieces), "the test text must contain skiplist tokens"


def test_empty_and_whitespace_texts_encode_to_special_tokens(toy_encoder):
    docs = toy_encoder.encode_documents(["", "   \n\t"])
    assert [d.shape[0] for d in docs] == [3, 3]
    np.testing.assert_allclose(docs[0], docs[1], atol=1e-6)
    assert toy_encoder.encode_queries("")[0].shape == (32, 128)


def test_vectors_are_unit_length(toy_encoder):
    for v in toy_encoder.encode_documents(TEXTS) + toy_encoder.encode_queries(TEXTS):
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_document_vectors_do_not_depend_on_batch(toy_model_dir):
    encoder = ColbertEncoder(toy_model_dir, batch_size=2)
    alone = [encoder.encode_documents([t])[0] for t in TEXTS]
    together = encoder.encode_documents(TEXTS)
    reversed_ = encoder.encode_documents(TEXTS[::-1])[::-1]
    big_batch = ColbertEncoder(toy_model_dir, batch_size=64).encode_documents(TEXTS * 3)[: len(TEXTS)]
    for a, b, c, d in zip(alone, together, reversed_, big_batch, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
        np.testing.assert_allclose(a, c, atol=1e-5)
        np.testing.assert_allclose(a, d, atol=1e-5)


def test_output_order_equals_input_order(toy_encoder):
    lengths = [v.shape[0] for v in toy_encoder.encode_documents(TEXTS)]
    assert lengths == [toy_encoder.encode_documents([t])[0].shape[0] for t in TEXTS]


def test_encoder_matches_pytorch_reference_end_to_end(toy_model_dir, toy_trio):
    torch = pytest.importorskip("torch", reason="the reference needs the [export] extra")
    from colbert_onnx.export import load_checkpoint

    model = load_checkpoint(toy_trio[96]).module()
    encoder = ColbertEncoder(toy_model_dir, dim=96)
    ids = encoder.preprocessor.queries(TEXTS[:2])
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.ones_like(torch.from_numpy(ids))).numpy()
    got = np.stack(encoder.encode_queries(TEXTS[:2]))
    assert np.abs(got - want).max() <= 1e-4


def test_rerank_orders_by_maxsim_and_returns_documents(toy_encoder):
    results = toy_encoder.rerank("Berlin population", TEXTS)
    scores = maxsim(toy_encoder.encode_queries("Berlin population")[0], toy_encoder.encode_documents(TEXTS))
    assert [r["index"] for r in results] == list(np.argsort(-scores, kind="stable"))
    assert [r["document"] for r in results] == [TEXTS[r["index"]] for r in results]
    assert all(isinstance(r["relevance_score"], float) for r in results)
    assert len(toy_encoder.rerank("Berlin population", TEXTS, top_n=2)) == 2


@pytest.mark.parametrize("bad", [None, 42, [b"bytes"], ["ok", None], [3.5]])
def test_bad_texts_raise_invalid_input(toy_encoder, bad):
    with pytest.raises(InvalidInputError):
        toy_encoder.encode_documents(bad)
    with pytest.raises(InvalidInputError):
        toy_encoder.encode_queries(bad)


class _Table:
    """What pandas' DataFrame looks like to the encoder: 2-D, iterating over its column names."""

    ndim = 2

    def __iter__(self):
        return iter(["text"])


@pytest.mark.parametrize(("container", "says"), [
    ({"id1": "Berlin is big.", "id2": "Paris"}, "dict, whose items are its keys"),
    ({"Berlin is big.", "Paris"}, "set, which has no order"),
    (frozenset({"Paris"}), "frozenset, which has no order"),
    (_Table(), r"2-D _Table; pass one column"),
    (np.array([["Berlin", "Paris"], ["Rome", "Oslo"]]), r"2-D ndarray"),
], ids=["dict", "set", "frozenset", "dataframe-like", "2d-array"])
def test_containers_whose_iteration_is_not_the_texts_are_refused(toy_encoder, container, says):
    for call in (toy_encoder.encode_documents, toy_encoder.encode_queries, lambda t: toy_encoder.rerank("q", t)):
        with pytest.raises(InvalidInputError, match=says):
            call(container)


def test_a_dataframe_is_refused_and_its_column_encodes(toy_encoder):
    pd = pytest.importorskip("pandas", reason="pandas is not installed here (it comes with the [ray] extra)")
    frame = pd.DataFrame({"text": ["Berlin is big.", "Paris"]})
    with pytest.raises(InvalidInputError, match="df\\['text'\\]"):
        toy_encoder.encode_documents(frame)
    assert len(toy_encoder.encode_documents(frame["text"])) == 2


def test_error_names_the_bad_item(toy_encoder):
    with pytest.raises(InvalidInputError, match=r"documents\[1\] is NoneType"):
        toy_encoder.encode_documents(["fine", None])


def test_rerank_rejects_non_str_query_and_bad_top_n(toy_encoder):
    with pytest.raises(InvalidInputError, match="query must be a str"):
        toy_encoder.rerank(None, ["a"])
    with pytest.raises(InvalidInputError, match="top_n"):
        toy_encoder.rerank("q", ["a"], top_n=0)


def test_dim_not_in_folder_lists_available_dims(toy_model_dir):
    with pytest.raises(UnsupportedDimError, match="available dims: 64, 96, 128"):
        ColbertEncoder(toy_model_dir, dim=256)


@pytest.mark.parametrize("heads", [(96, 64), (64,)], ids=lambda h: "+".join(map(str, h)))
def test_without_a_dim_the_folders_largest_head_is_encoded(fewer_heads_model_dirs, heads):
    encoder = ColbertEncoder(fewer_heads_model_dirs[heads])
    (query,) = encoder.encode_queries(["Berlin"])
    assert encoder.dim == max(heads) and encoder.describe()["dim"] == max(heads) and query.shape[1] == max(heads)


def test_without_a_dim_a_full_folder_encodes_the_128_head(toy_model_dir):
    assert ColbertEncoder(toy_model_dir).dim == 128


def test_an_explicit_dim_the_folder_lacks_is_refused_not_replaced(fewer_heads_model_dirs):
    with pytest.raises(UnsupportedDimError, match="dim 128 is not in .*available dims: 64, 96"):
        ColbertEncoder(fewer_heads_model_dirs[(96, 64)], dim=128)


def test_unknown_precision_lists_what_exists(toy_model_dir):
    with pytest.raises(PrecisionNotAvailableError, match="in this folder: fp32"):
        ColbertEncoder(toy_model_dir, precision="int3")


def test_missing_model_folder_says_how_to_create_one(tmp_path):
    with pytest.raises(ModelFolderError, match="colbert-onnx export"):
        ColbertEncoder(tmp_path / "absent")


def test_a_file_passed_as_the_folder_is_named_a_file(toy_model_dir):
    with pytest.raises(ModelFolderError, match="manifest.json is a file, not a model folder"):
        ColbertEncoder(toy_model_dir / "manifest.json")


@pytest.mark.parametrize("bad", [5, b"models/toy-onnx", ["models/toy-onnx"]], ids=["int", "bytes", "list"])
def test_a_folder_that_is_not_a_path_is_a_model_folder_error(bad):
    with pytest.raises(ModelFolderError, match="model_dir must be a str or pathlib.Path"):
        ColbertEncoder(bad)


def test_numpy_ints_are_taken_as_the_ints_they_are(toy_model_dir):
    encoder = ColbertEncoder(toy_model_dir, dim=np.int64(64), batch_size=np.int32(4))
    assert (encoder.dim, encoder.config.batch_size) == (64, 4) and type(encoder.dim) is int
    assert encoder.for_dim(np.int64(96)).dim == 96


def test_folder_without_manifest_is_rejected(tmp_path):
    with pytest.raises(ModelFolderError, match="manifest.json"):
        ColbertEncoder(tmp_path)


def test_corrupt_manifest_is_rejected(toy_model_dir, tmp_path):
    folder = shutil.copytree(toy_model_dir, tmp_path / "m")
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match="not valid JSON"):
        ColbertEncoder(folder)


def test_truncated_graph_is_named(toy_model_dir, tmp_path):
    folder = shutil.copytree(toy_model_dir, tmp_path / "t")
    data = (folder / "model.onnx").read_bytes()
    (folder / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFolderError, match="model.onnx.*truncated"):
        ColbertEncoder(folder)


def test_corrupt_graph_of_right_size_is_named(toy_model_dir, tmp_path):
    folder = shutil.copytree(toy_model_dir, tmp_path / "c")
    unfingerprint(folder)  # as exported before fingerprints: the load itself must name the file (else: the fingerprint)
    size = (folder / "model.onnx").stat().st_size
    (folder / "model.onnx").write_bytes(b"\x07garbage" * (size // 8) + b"x" * (size % 8))
    with pytest.raises(ModelFolderError, match="cannot load ONNX graph .*model.onnx"):
        ColbertEncoder(folder)


def test_tokenizer_larger_than_graph_vocabulary_is_rejected(toy_model_dir, tmp_path):
    folder = shutil.copytree(toy_model_dir, tmp_path / "v")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["vocab_size"] = 100
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(TokenizerMismatchError, match="100 rows"):
        ColbertEncoder(folder)


def test_tokenizer_without_markers_is_rejected(toy_model_dir, tmp_path):
    folder = shutil.copytree(toy_model_dir, tmp_path / "k")
    tok = json.loads((folder / "tokenizer.json").read_text())
    tok["added_tokens"] = [t for t in tok["added_tokens"] if t["content"] != "[QueryMarker]"]
    (folder / "tokenizer.json").write_text(json.dumps(tok))
    with pytest.raises(TokenizerMismatchError, match=r"\[QueryMarker\]"):
        ColbertEncoder(folder)


def test_for_dim_shares_the_session_of_the_shared_backbone_graph(toy_model_dir):
    encoder = ColbertEncoder(toy_model_dir, dim=128)
    small = encoder.for_dim(64)
    assert small.session is encoder.session
    for a, b in zip(small.encode_documents(TEXTS), ColbertEncoder(toy_model_dir, dim=64).encode_documents(TEXTS),
                    strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert encoder.encode_queries("x")[0].shape == (32, 128)
    with pytest.raises(UnsupportedDimError):
        encoder.for_dim(32)


@pytest.mark.parametrize("progress", ["muvera", "no", 1, None])
def test_progress_that_is_not_a_bool_is_refused_not_taken_as_truth(toy_encoder, progress):
    with pytest.raises(InvalidInputError, match="progress must be True or False"):
        toy_encoder.encode_queries(["a"], progress)
    with pytest.raises(InvalidInputError, match="progress must be True or False"):
        toy_encoder.encode_documents(["a"], progress=progress)


def test_numpy_ints_are_taken_for_top_n_and_max_length(toy_encoder):
    assert len(toy_encoder.rerank("Berlin", TEXTS, top_n=np.int64(2))) == 2
    batch = toy_encoder.tokenize(["Berlin ist groß und alt."], "document", max_length=np.int64(5))
    assert len(batch.ids[0]) == 5


# --- truncation side: right (the default) keeps a text's first tokens, left its last; the framing stays ----------

SIDES_BASE = ("Berlin ist die Hauptstadt Deutschlands und hat 3,8 Millionen Einwohner; Paris liegt an der Seine, Rom "
              "am Tiber. Москва — столица России. 東京は日本の首都である。 ") * 4
QUERY_BODY, DOCUMENT_BODY = 29, 17  # 32 tokens in all for a query; document_max_length=20 below


def _text_of_tokens(tokenizer: Tokenizer, n: int) -> str:
    """The shortest prefix of SIDES_BASE whose body is exactly `n` tokens (it starts at a word)."""
    for end in range(1, len(SIDES_BASE) + 1):
        if len(tokenizer.encode(SIDES_BASE[:end], add_special_tokens=False).ids) == n:
            return SIDES_BASE[:end]
    raise AssertionError(f"no prefix of the base text has {n} tokens")


@pytest.fixture(scope="module")
def short_documents(toy_model_dir) -> ColbertEncoder:
    return ColbertEncoder(toy_model_dir, document_max_length=DOCUMENT_BODY + 3)


@pytest.mark.parametrize("over", [-5, 0, 1, 200], ids=["under", "exactly-at-the-limit", "one-over", "far-over"])
def test_left_truncated_queries_keep_their_last_tokens_between_the_markers_then_the_masks(toy_encoder, tokenizer,
                                                                                          over):
    text = _text_of_tokens(tokenizer, QUERY_BODY + over)
    body = tokenizer.encode(text, add_special_tokens=False).ids
    bos, marker, eos, mask = _ids(tokenizer, "<s>", "[QueryMarker]", "</s>", "<mask>")
    batch = toy_encoder.tokenize([text], "query", truncation_side="left")
    framed = [bos, marker, *body[-QUERY_BODY:], eos]
    assert batch.ids[0].tolist() == framed + [mask] * (32 - len(framed))
    assert int(batch.token_counts[0]) == len(framed)
    if over <= 0:  # nothing cut: the same ids either side
        assert batch.ids[0].tolist() == toy_encoder.tokenize([text], "query").ids[0].tolist()


@pytest.mark.parametrize("over", [-5, 0, 1, 200], ids=["under", "exactly-at-the-limit", "one-over", "far-over"])
@pytest.mark.parametrize("limit", ["document_max_length", "max_length"])
def test_left_truncated_documents_keep_their_last_tokens_between_the_markers(toy_encoder, short_documents, tokenizer,
                                                                             over, limit):
    """Cut at the encoder's document_max_length, or at a per-call max_length (Cohere's max_tokens_per_doc)."""
    text = _text_of_tokens(tokenizer, DOCUMENT_BODY + over)
    body = tokenizer.encode(text, add_special_tokens=False).ids
    if limit == "max_length":
        batch = toy_encoder.tokenize([text], "document", max_length=DOCUMENT_BODY + 3, truncation_side="left")
    else:
        batch = short_documents.tokenize([text], "document", truncation_side="left")
    bos, marker, eos = _ids(tokenizer, "<s>", "[DocumentMarker]", "</s>")
    assert batch.ids[0].tolist() == [bos, marker, *body[-DOCUMENT_BODY:], eos]
    if over <= 0:
        assert batch.ids[0].tolist() == short_documents.tokenize([text], "document").ids[0].tolist()


@pytest.mark.parametrize("kind", ["query", "document"])
def test_a_left_truncated_text_has_the_ids_and_vectors_of_its_tail_encoded_alone(toy_encoder, short_documents,
                                                                                 tokenizer, kind):
    encoder, body = (toy_encoder, QUERY_BODY) if kind == "query" else (short_documents, DOCUMENT_BODY)
    tail = _text_of_tokens(tokenizer, body)
    text = "Rom liegt am Tiber und hat viele Brunnen. " * 6 + tail
    cut = encoder.tokenize([text], kind, truncation_side="left")
    alone = encoder.tokenize([tail], kind)
    np.testing.assert_array_equal(cut.ids[0], alone.ids[0])
    encode = encoder.encode_queries if kind == "query" else encoder.encode_documents
    (got,), (want,) = encode([text], truncation_side="left"), encode([tail])
    np.testing.assert_allclose(got, want, atol=1e-5)
    (right,) = encode([text])
    assert right.shape != got.shape or not np.allclose(right, got, atol=1e-3), "the test text must start otherwise"


def test_the_configs_truncation_side_is_the_default_a_call_may_override(toy_model_dir, short_documents, tokenizer):
    text = _text_of_tokens(tokenizer, 200)
    left = ColbertEncoder(toy_model_dir, document_max_length=DOCUMENT_BODY + 3, truncation_side="left")
    assert left.truncation_side == "left" and short_documents.truncation_side == "right"
    for kind in ("query", "document"):
        np.testing.assert_array_equal(left.tokenize([text], kind).ids[0],
                                      short_documents.tokenize([text], kind, truncation_side="left").ids[0])
        np.testing.assert_array_equal(left.tokenize([text], kind, truncation_side="right").ids[0],
                                      short_documents.tokenize([text], kind).ids[0])


def test_rerank_cuts_the_query_and_documents_on_the_side_asked_for(short_documents, tokenizer):
    query, documents = _text_of_tokens(tokenizer, 60), [_text_of_tokens(tokenizer, 40), TEXTS[4]]
    got = {r["index"]: r["relevance_score"] for r in short_documents.rerank(query, documents, truncation_side="left")}
    (q,) = short_documents.encode_queries([query], truncation_side="left")
    want = maxsim(q, short_documents.encode_documents(documents, truncation_side="left"))
    assert [got[i] for i in range(len(documents))] == pytest.approx(want.tolist(), abs=1e-5)


@pytest.mark.parametrize("bad", ["Left", "middle", "", 1, True])
def test_a_truncation_side_other_than_right_or_left_is_refused_naming_the_values(toy_encoder, bad):
    calls = [lambda: toy_encoder.tokenize(["a"], "query", truncation_side=bad),
             lambda: toy_encoder.tokenize(["a"], "document", truncation_side=bad),
             lambda: toy_encoder.encode_queries(["a"], truncation_side=bad),
             lambda: toy_encoder.encode_documents(["a"], truncation_side=bad),
             lambda: toy_encoder.rerank("q", ["a"], truncation_side=bad),
             lambda: toy_encoder.preprocessor.documents(["a"], truncation_side=bad)]
    for call in calls:
        with pytest.raises(InvalidInputError, match=f"truncation_side must be one of right, left, got {bad!r}"):
            call()
