"""The text rule (runtime/text.py) on the API and the CLI: generated texts of every class either encode or get a
typed error naming the item (the API) or the line (the CLI, exit 2); never the tokenizer's TypeError."""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import tempfile
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from colbert_onnx import InvalidInputError, InvalidTextError
from colbert_onnx.cli import main
from colbert_onnx.text import MAX_TEXT_CHARS, REMOVED_CHARS, SPACED_CHARS, normalize_text, text_problem

EXAMPLES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Every code point the rule accepts as is (no surrogate, no NUL): what real pipelines hand over.
usable_chars = st.characters(exclude_characters="\x00", exclude_categories=["Cs"])
usable_texts = st.text(usable_chars, max_size=40)
surrogates = st.integers(0xD800, 0xDFFF).map(chr)
plain_words = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz Berlin"), min_size=1, max_size=30)


@st.composite
def texts_with_one_bad(draw, bad: st.SearchStrategy[str]) -> tuple[list[str], int, int]:
    """(texts, index of the bad text, position of the bad character in it)."""
    texts = draw(st.lists(usable_texts, min_size=1, max_size=6))
    index = draw(st.integers(0, len(texts) - 1))
    prefix, suffix = draw(usable_texts), draw(st.text(usable_chars | surrogates | st.just("\x00"), max_size=10))
    texts[index] = prefix + draw(bad) + suffix
    return texts, index, len(prefix)


@EXAMPLES
@given(case=texts_with_one_bad(surrogates), kind=st.sampled_from(["query", "document"]))
def test_a_lone_surrogate_is_an_invalid_text_error_naming_the_item(toy_encoder, case, kind) -> None:
    texts, index, position = case
    encode = toy_encoder.encode_queries if kind == "query" else toy_encoder.encode_documents
    with pytest.raises(InvalidTextError) as info:
        encode(texts)
    assert info.value.index == index and info.value.what == ("queries" if kind == "query" else "documents")
    assert f"[{index}] holds a lone surrogate U+" in str(info.value) and f"position {position}" in str(info.value)


@EXAMPLES
@given(case=texts_with_one_bad(st.just("\x00")))
def test_a_nul_character_is_an_invalid_text_error_naming_the_item_and_position(toy_encoder, case) -> None:
    texts, index, position = case
    with pytest.raises(InvalidTextError, match=rf"documents\[{index}\] holds a NUL character \(U\+0000\) "
                       rf"at position {position}"):
        toy_encoder.encode_documents(texts)


@EXAMPLES
@given(query=st.builds(lambda a, s, b: a + s + b, usable_texts, surrogates, usable_texts), docs=st.lists(usable_texts))
def test_rerank_names_a_bad_query_as_the_query(toy_encoder, query, docs) -> None:
    with pytest.raises(InvalidTextError, match=r"^query holds a lone surrogate"):
        toy_encoder.rerank(query, docs)


@EXAMPLES
@given(case=texts_with_one_bad(surrogates))
def test_rerank_names_a_bad_document_by_its_index(toy_encoder, case) -> None:
    texts, index, _ = case
    with pytest.raises(InvalidTextError, match=rf"^documents\[{index}\] "):
        toy_encoder.rerank("Berlin", texts)


@EXAMPLES
@given(texts=st.lists(usable_texts, min_size=1, max_size=8), kind=st.sampled_from(["query", "document"]))
def test_every_other_text_encodes(toy_encoder, texts, kind) -> None:
    """Controls, BOM, bidi marks, private use, noncharacters, emoji, any script: vectors, never an error."""
    out = toy_encoder.encode_queries(texts) if kind == "query" else toy_encoder.encode_documents(texts)
    assert len(out) == len(texts)
    assert all(np.isfinite(v).all() and v.shape[1] == 128 for v in out)


@EXAMPLES
@given(words=st.lists(plain_words, min_size=1, max_size=4), marks=st.lists(st.sampled_from(REMOVED_CHARS), min_size=1))
def test_bom_and_bidi_controls_are_removed_before_tokenization(toy_encoder, words, marks) -> None:
    marked = "".join(m + w for m, w in zip(marks, words, strict=False)) + " ".join(words[len(marks) :])
    unmarked = "".join(words[: len(marks)]) + " ".join(words[len(marks) :])
    assert normalize_text(marked) == unmarked
    got, want = toy_encoder.encode_documents([marked, unmarked])
    np.testing.assert_array_equal(got, want)


@EXAMPLES
@given(words=st.lists(plain_words, min_size=2, max_size=5),
       controls=st.lists(st.sampled_from(SPACED_CHARS), min_size=1))
def test_other_control_characters_encode_as_spaces(toy_encoder, words, controls) -> None:
    joined = "".join(w + controls[i % len(controls)] for i, w in enumerate(words))
    spaced = "".join(w + " " for w in words)
    got, want = toy_encoder.encode_documents([joined, spaced])
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("extra", [0, 1])
def test_texts_longer_than_the_limit_are_refused_before_tokenization(toy_encoder, extra) -> None:
    text = "a " * (MAX_TEXT_CHARS // 2) + "b" * extra
    if extra:
        with pytest.raises(InvalidTextError, match=rf"documents\[1\] has {MAX_TEXT_CHARS + 1:,} characters"):
            toy_encoder.encode_documents(["ok", text])
    else:
        assert text_problem(text) is None


# Characters NFKC expands, and by how much: U+FDFA (18, the most any character expands), U+FDFB, U+3315, U+2474
EXPANDING = {c: len(unicodedata.normalize("NFKC", c)) for c in ("\ufdfa", "\ufdfb", "\u3315", "\u2474")}


def _expanding_text(char: str, copies: int, placement: str) -> str:
    filler = "Berlin ist die Hauptstadt. " * 1000
    run = char * copies
    return {"start": run + filler, "end": filler + run, "spread": (filler[:50] + char * 50) * (copies // 50)
            + char * (copies % 50)}[placement]


@pytest.mark.parametrize("placement", ["start", "end", "spread"])
@pytest.mark.parametrize("char", list(EXPANDING), ids=[f"U+{ord(c):04X}" for c in EXPANDING])
def test_a_text_that_nfkc_expands_past_the_limit_is_refused_before_tokenization(char, placement) -> None:
    """The tokenizer normalizes before it cuts: 1 Mi x U+FDFA took 63 s and 11 GB to tokenize (18 Mi characters)."""
    text = _expanding_text(char, MAX_TEXT_CHARS // EXPANDING[char] + 1, placement)
    assert len(text) <= MAX_TEXT_CHARS < len(unicodedata.normalize("NFKC", text))
    assert "Unicode normalization (NFKC) expands past" in text_problem(text)


@pytest.mark.parametrize("char", list(EXPANDING), ids=[f"U+{ord(c):04X}" for c in EXPANDING])
def test_a_text_that_nfkc_expands_to_the_limit_is_usable(char) -> None:
    text = char * (MAX_TEXT_CHARS // EXPANDING[char])
    assert len(unicodedata.normalize("NFKC", text)) <= MAX_TEXT_CHARS and text_problem(text) is None


def _normalized_to(target: int, sequence: str, at: int) -> str:
    """A text whose NFKC length is exactly `target`: ASCII, then `sequence` (characters NFKC composes or reorders)
    starting at `at`, U+FDFA to expand, ASCII to fill."""
    head = "a" * at + sequence + "\ufdfa" * 50_000
    return head + "a" * (target - len(unicodedata.normalize("NFKC", head)))


@pytest.mark.parametrize("shift", [-2, -1, 0, 1])
@pytest.mark.parametrize("sequence", ["e\u0301", "A\u0307\u0304\u0323", "\u1100\u1161\u11a8", "\u0f71\u0f72"],
                         ids=["e+acute", "A+marks-reordered", "hangul-jamo", "tibetan-vowels"])
def test_the_nfkc_limit_is_exact_whatever_composes_where(sequence, shift) -> None:
    """Counted by 64 Ki pieces, a composition across a cut was off by one either way (a review found both)."""
    at = (1 << 16) + shift
    assert text_problem(_normalized_to(MAX_TEXT_CHARS, sequence, at)) is None
    assert "(NFKC) expands past" in text_problem(_normalized_to(MAX_TEXT_CHARS + 1, sequence, at))


def test_an_nfkc_expanding_text_is_refused_naming_the_item(toy_encoder) -> None:
    with pytest.raises(InvalidTextError, match=r"documents\[1\] has 60,000 characters that .* \(NFKC\)"):
        toy_encoder.encode_documents(["ok", "\ufdfa" * 60_000])


def test_invalid_text_error_is_an_invalid_input_error_and_pickles() -> None:
    import pickle

    err = InvalidTextError("documents", 3, "holds a NUL character")
    assert isinstance(err, InvalidInputError)
    again = pickle.loads(pickle.dumps(err))
    assert (again.what, again.index, again.reason, str(again)) == ("documents", 3, "holds a NUL character", str(err))


# ---------------------------------------------------------------- CLI: stdin and files


def run_cli(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    return rc, err.getvalue()


line_texts = st.text(st.characters(exclude_characters="\n\r\x00", exclude_categories=["Cs"]), max_size=20)
not_utf8 = st.binary(min_size=1, max_size=12).filter(lambda b: b"\n" not in b and b"\r" not in b).filter(
    lambda b: _undecodable(b)
)


def _undecodable(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


@EXAMPLES
@given(lines=st.lists(line_texts, min_size=1, max_size=6), bad=not_utf8, data=st.data())
def test_cli_input_that_is_not_utf8_exits_2_naming_the_line(toy_model_dir, lines, bad, data) -> None:
    index = data.draw(st.integers(0, len(lines) - 1))
    raw = [line.encode("utf-8") for line in lines]
    raw[index] = bad
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "texts.txt"
        path.write_bytes(b"\n".join(raw) + b"\n")
        rc, err = run_cli(["encode", str(toy_model_dir), "--input", str(path)])
    assert rc == 2
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{path} line {index + 1} is not UTF-8: byte 0x" in err


@EXAMPLES
@given(lines=st.lists(line_texts, min_size=1, max_size=6), data=st.data())
def test_cli_lines_with_a_nul_exit_2_naming_the_line(toy_model_dir, lines, data) -> None:
    index = data.draw(st.integers(0, len(lines) - 1))
    lines[index] += "\x00"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "texts.txt"
        path.write_bytes("\n".join(lines).encode("utf-8"))
        rc, err = run_cli(["rerank", str(toy_model_dir), "--query", "q", "--documents-file", str(path)])
    assert rc == 2 and f"line {index + 1} holds a NUL character" in err and err.count("\n") == 1


def test_cli_encodes_a_utf8_file_with_bom_crlf_and_controls_as_the_api(toy_model_dir, toy_encoder, tmp_path) -> None:
    path = tmp_path / "texts.txt"
    path.write_bytes("\ufeffBerlin\u202e ist\r\nParis\x1best belle\r\n".encode())
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["encode", str(toy_model_dir), "--input", str(path)]) == 0
    import json

    got = [np.array(json.loads(line)["embeddings"]) for line in out.getvalue().splitlines()]
    want = toy_encoder.encode_documents(["Berlin ist", "Paris est belle"])
    assert len(got) == 2
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g, w, atol=1e-5)


def test_cli_query_argument_with_a_surrogate_exits_2_naming_the_query(toy_model_dir) -> None:
    """A non-UTF-8 argv byte reaches Python as a surrogate (surrogateescape)."""
    rc, err = run_cli(["rerank", str(toy_model_dir), "--query", "Berlin \udcff", "-d", "Berlin"])
    assert rc == 2 and err.startswith("colbert-onnx: error: query holds a lone surrogate U+DCFF at position 7")


def test_cli_missing_input_file_is_one_error_line(toy_model_dir, tmp_path) -> None:
    rc, err = run_cli(["encode", str(toy_model_dir), "--input", str(tmp_path / "absent.txt")])
    assert rc == 2 and "cannot read" in err and err.count("\n") == 1


def test_the_issue_symptom_undecodable_stdin_is_one_line_and_exit_2(toy_model_dir) -> None:
    """`printf '\\xff\\xfe bad\\n' | colbert-onnx encode FOLDER --input-type document` (issue 24)."""
    result = subprocess.run(
        [sys.executable, "-m", "colbert_onnx.cli", "encode", str(toy_model_dir), "--input-type", "document"],
        input=b"\xff\xfe bad\n",
        capture_output=True,
        timeout=120,
    )
    err = result.stderr.decode()
    assert result.returncode == 2, err
    assert err == (
        "colbert-onnx: error: stdin line 1 is not UTF-8: byte 0xff at byte 1 (invalid start byte); convert the "
        "input to UTF-8 first, e.g. iconv -f LATIN1 -t UTF-8\n"
    )
    assert result.stdout == b""
