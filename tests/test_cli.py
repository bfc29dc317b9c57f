"""The `colbert-onnx` CLI: export, encode (JSON lines), rerank (Jina /v1/rerank shape), errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from colbert_onnx import ColbertEncoder
from colbert_onnx.cli import main


def test_encode_documents_writes_one_json_line_per_text(toy_model_dir, tmp_path, capsys):
    src = tmp_path / "texts.txt"
    src.write_text("Berlin\nParis est belle.\n", encoding="utf-8")
    assert main(["encode", str(toy_model_dir), "--input", str(src), "--dim", "64"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["index"] for x in lines] == [0, 1]
    want = ColbertEncoder(toy_model_dir, dim=64).encode_documents(["Berlin", "Paris est belle."])
    for line, vectors in zip(lines, want, strict=True):
        np.testing.assert_allclose(np.array(line["embeddings"]), vectors, atol=1e-5)


def test_encode_truncation_side_left_keeps_the_last_tokens_of_a_long_document(toy_model_dir, tmp_path, capsys):
    text = "Rom liegt am Tiber. " * 5 + "Berlin ist die Hauptstadt Deutschlands."
    src = tmp_path / "texts.txt"
    src.write_text(text + "\n", encoding="utf-8")
    argv = ["encode", str(toy_model_dir), "--input", str(src), "--document-max-length", "12"]
    assert main([*argv, "--truncation-side", "left"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    encoder = ColbertEncoder(toy_model_dir, document_max_length=12)
    (want,) = encoder.encode_documents([text], truncation_side="left")
    np.testing.assert_allclose(np.array(json.loads(line)["embeddings"]), want, atol=1e-5)
    (right,) = encoder.encode_documents([text])
    assert right.shape != want.shape or not np.allclose(right, want, atol=1e-3)


def test_encode_queries_from_stdin(toy_model_dir, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("what is berlin\n"))
    assert main(["encode", str(toy_model_dir), "--input-type", "query"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert np.array(json.loads(line)["embeddings"]).shape == (32, 128)


def test_rerank_prints_jina_rerank_shape(toy_model_dir, capsys):
    assert main(["rerank", str(toy_model_dir), "--query", "Berlin", "-d", "Berlin", "-d", "Cats", "--top-n", "1"]) == 0
    payload = json.loads(capsys.readouterr().out)
    (hit,) = payload["results"]
    assert set(hit) == {"index", "relevance_score", "document"}
    assert hit["document"]["text"] in ("Berlin", "Cats")


def test_unknown_dim_exits_2_with_message(toy_model_dir, capsys):
    assert main(["rerank", str(toy_model_dir), "--query", "q", "-d", "x", "--dim", "32"]) == 2
    assert "dim 32 is not in" in capsys.readouterr().err


def test_export_cli_writes_a_usable_folder(toy_trio, tmp_path, capsys):
    pytest.importorskip("torch", reason="export needs the [export] extra")
    out = tmp_path / "cli-out"
    assert main(["export", str(toy_trio[64]), "--out", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["heads"] == [64]
    assert set(report["fidelity_gates_passed"]) == {"fp32", "int8", "fp16"}
    assert ColbertEncoder(out, dim=64).encode_queries("x")[0].shape == (32, 64)


def test_export_cli_reports_bad_checkpoint(tmp_path, capsys):
    pytest.importorskip("torch", reason="export needs the [export] extra")
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "lacks config.json" in capsys.readouterr().err


def test_encode_int8_output_prints_codes_and_scales(toy_model_dir, tmp_path, capsys):
    src = tmp_path / "t.txt"
    src.write_text("Berlin ist groß\n", encoding="utf-8")
    assert main(["encode", str(toy_model_dir), "--input", str(src), "--output", "int8", "--pool-factor", "2"]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    codes, scales = np.array(line["embeddings"]), np.array(line["scales"])
    assert codes.dtype.kind == "i" and np.abs(codes).max() <= 127
    assert codes.shape == (len(scales), 128)
    full = ColbertEncoder(toy_model_dir).encode_documents(["Berlin ist groß"])[0]
    assert codes.shape[0] < full.shape[0], "pool factor 2 must reduce the vector count"


def test_encode_queries_reject_document_only_options(toy_model_dir, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("q\n"))
    assert main(["encode", str(toy_model_dir), "--input-type", "query", "--output", "binary"]) == 2
    assert "documents only" in capsys.readouterr().err


def test_a_document_only_option_on_queries_is_a_one_line_error(toy_model_dir, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("q\n"))
    assert main(["encode", str(toy_model_dir), "--input-type", "query", "--pool-factor", "-3"]) == 2
    assert capsys.readouterr().err == (
        "colbert-onnx: error: --output (but float32 and muvera) and --pool-factor apply to documents only\n"
    )


def test_rerank_without_documents_is_a_one_line_error(toy_model_dir, capsys):
    assert main(["rerank", str(toy_model_dir), "--query", "q"]) == 2
    assert capsys.readouterr().err == (
        "colbert-onnx: error: rerank needs documents: --document TEXT (repeatable) or --documents-file\n"
    )


def test_a_missing_extra_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "colbert_onnx.export", None)
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.startswith("colbert-onnx: error: export needs the [export] extra")


def test_queries_show_progress_when_asked(toy_model_dir, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("what is berlin\n"))
    assert main(["encode", str(toy_model_dir), "--input-type", "query", "--progress"]) == 0
    assert "encoding queries" in capsys.readouterr().err


@pytest.mark.parametrize("decimals", ["0", "-1"])
def test_encode_refuses_fewer_than_one_decimal(toy_model_dir, capsys, decimals):
    with pytest.raises(SystemExit) as info:
        main(["encode", str(toy_model_dir), "--decimals", decimals])
    assert info.value.code == 2
    assert f"argument --decimals: '{decimals}' must be >= 1" in capsys.readouterr().err


def test_export_refuses_a_document_max_length_of_0(toy_trio, tmp_path, capsys):
    pytest.importorskip("torch", reason="export needs the [export] extra")
    out = tmp_path / "cli-out"
    assert main(["export", str(toy_trio[64]), "--out", str(out), "--document-max-length", "0"]) == 2
    assert "colbert-onnx: error: document_max_length must be an int >= 4" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--int8-method", "dynamic", "--precision", "fp32"], "int8_method='dynamic' makes int8 graphs"),
    (["--precision", ""], "no precision given"),
    (["--precision", " , "], "no precision given"),
    (["--document-max-length", "1000000000"], "exceeds the 8194 positions"),
    (["--private"], "--private applies with --push-to-hub"),
], ids=["int8-method-without-int8", "empty-precision", "blank-precisions", "length-over-positions", "private-alone"])
def test_export_refuses_a_choice_it_would_ignore_before_any_work(toy_trio, tmp_path, capsys, flags, message):
    pytest.importorskip("torch", reason="export needs the [export] extra")
    out = tmp_path / "cli-out"
    assert main(["export", str(toy_trio[64]), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith("colbert-onnx: error:") and message in err, err
    assert list(tmp_path.iterdir()) == [], "nothing is staged for a refused export"


def test_export_into_a_folder_it_cannot_write_is_one_line(toy_trio, tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch", reason="export needs the [export] extra")
    import tempfile

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", denied)
    assert main(["export", str(toy_trio[64]), "--out", str(tmp_path / "o"), "--precision", "fp32"]) == 2
    assert "cannot write in" in capsys.readouterr().err


def test_a_failed_upload_says_the_folder_is_written(toy_trio, tmp_path, capsys, monkeypatch):
    hub = pytest.importorskip("huggingface_hub", reason="--push-to-hub needs huggingface_hub")
    pytest.importorskip("torch", reason="export needs the [export] extra")

    def offline(self, *args, **kwargs):
        raise OSError("no network here")

    monkeypatch.setattr(hub.HfApi, "create_repo", offline)
    out = tmp_path / "o"
    assert main(["export", str(toy_trio[64]), "--out", str(out), "--precision", "fp32", "--engines", "onnxruntime",
                 "--push-to-hub", "nobody/x"]) == 2
    err = capsys.readouterr().err
    assert f"{out} is written, but could not upload" in err and "no network here" in err and "Traceback" not in err
    assert ColbertEncoder(out, dim=64).encode_queries("x")[0].shape == (32, 64)


def test_ctrl_c_is_one_line_and_status_130(toy_trio, tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch", reason="export needs the [export] extra")
    import colbert_onnx.export as export

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "export_model", interrupted)
    assert main(["export", str(toy_trio[64]), "--out", str(tmp_path / "o")]) == 130
    assert capsys.readouterr().err == "colbert-onnx: interrupted\n"


def _encode_command(model_dir) -> list[str]:
    return [sys.executable, "-m", "colbert_onnx.cli", "encode", str(model_dir)]


def test_a_reader_closing_the_pipe_ends_encode_quietly(toy_model_dir):
    proc = subprocess.Popen(_encode_command(toy_model_dir), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdin.write(b"some text here\n" * 500)
    proc.stdin.close()
    proc.stdout.read(100)
    proc.stdout.close()  # as `| head -c 100` does
    err = proc.stderr.read()
    assert (proc.wait(timeout=120), err) == (141, b"")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_full_stdout_is_a_one_line_error(toy_model_dir):
    with open("/dev/full", "wb") as full:
        proc = subprocess.run(_encode_command(toy_model_dir), input=b"Berlin\n", stdout=full, stderr=subprocess.PIPE,
                              timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.decode().splitlines() == ["colbert-onnx: error: cannot write to stdout: No space left on device"]
