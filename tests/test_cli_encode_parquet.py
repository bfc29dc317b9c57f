"""`colbert-onnx encode-parquet` on bad paths and options: one line naming the problem, exit 2, the input kept."""

from __future__ import annotations

from pathlib import Path

import pytest

pa = pytest.importorskip("pyarrow", reason="needs the arrow extra (pip install '.[arrow]')")
pq = pytest.importorskip("pyarrow.parquet", reason="needs the arrow extra (pip install '.[arrow]')")

from colbert_onnx.cli import main  # noqa: E402

TEXTS = pa.table({"id": [1, 2], "text": ["Berlin", "Paris"]})


@pytest.fixture
def texts(tmp_path):
    path = tmp_path / "texts.parquet"
    pq.write_table(TEXTS, path)
    return path


def _error_line(capsys) -> str:
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("colbert-onnx: error: ")
    return line


def test_an_output_that_is_the_input_is_refused_and_the_input_kept(toy_model_dir, texts, capsys) -> None:
    assert main(["encode-parquet", str(toy_model_dir), str(texts), str(texts)]) == 2
    assert f"the output {texts} is the input {texts}" in _error_line(capsys)
    assert pq.read_table(texts).equals(TEXTS)


def test_an_output_that_links_to_the_input_is_refused_and_the_input_kept(toy_model_dir, texts, capsys) -> None:
    link = texts.with_name("link.parquet")
    link.symlink_to(texts)
    assert main(["encode-parquet", str(toy_model_dir), str(texts), str(link)]) == 2
    assert f"the output {link} is the input {texts}" in _error_line(capsys)
    assert pq.read_table(texts).equals(TEXTS)


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("missing.parquet", None, "No such file or directory"),
    ("notes.parquet", b"hello", "smaller than the minimum file footer"),
])
def test_an_unreadable_input_is_one_line_naming_it(toy_model_dir, tmp_path, capsys, name, content, reason) -> None:
    source = tmp_path / name
    if content is not None:
        source.write_bytes(content)
    assert main(["encode-parquet", str(toy_model_dir), str(source), str(tmp_path / "out.parquet")]) == 2
    line = _error_line(capsys)
    assert f"cannot read {source} as Parquet" in line and reason in line
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize(("out", "problem"), [("missing/out.parquet", "is in a folder that does not exist"),
                                              ("a-folder", "is a folder")])
def test_an_unwritable_output_is_one_line_naming_it(toy_model_dir, texts, capsys, out, problem) -> None:
    (texts.parent / "a-folder").mkdir()
    destination = texts.parent / out
    assert main(["encode-parquet", str(toy_model_dir), str(texts), str(destination)]) == 2
    assert f"the output {destination} {problem}" in _error_line(capsys)


def test_a_refused_text_is_one_line_naming_its_row_in_the_file(toy_model_dir, tmp_path, capsys) -> None:
    pq.write_table(pa.table({"text": ["good one", "also good", "bad\x00row", "never reached"]}), tmp_path / "i.parquet")
    argv = ["encode-parquet", str(toy_model_dir), str(tmp_path / "i.parquet"), str(tmp_path / "o.parquet"),
            "--batch-rows", "1"]
    assert main(argv) == 2
    assert "text column 'text', row 2 holds a NUL character" in _error_line(capsys)


@pytest.fixture
def fake_ray(monkeypatch):
    """The Ray pipeline behind colbert_onnx.ray.encode_parquet replaced by one that writes part of its destination,
    then fails; the calls' destinations recorded (no Ray cluster is started)."""
    import colbert_onnx.ray as cr
    from colbert_onnx import InvalidInputError

    calls: list = []

    def on_ray(ray, source, destination, *args):
        calls.append(destination)
        Path(destination).write_bytes(b"half a file")
        raise InvalidInputError("a row failed on Ray")

    monkeypatch.setattr(cr, "ray_module", lambda: None)
    monkeypatch.setattr(cr, "_encode_parquet_on_ray", on_ray)
    return calls


def test_on_ray_an_output_that_is_the_input_is_refused_before_ray_starts(toy_model_dir, texts, fake_ray,
                                                                          capsys) -> None:
    assert main(["encode-parquet", str(toy_model_dir), str(texts), str(texts), "--ray"]) == 2
    assert f"the output {texts} is the input {texts}" in _error_line(capsys)
    assert fake_ray == []


def test_on_ray_a_failure_leaves_no_output(toy_model_dir, texts, fake_ray, capsys) -> None:
    out = texts.with_name("out.parquet")
    assert main(["encode-parquet", str(toy_model_dir), str(texts), str(out), "--ray"]) == 2
    assert "a row failed on Ray" in _error_line(capsys)
    assert len(fake_ray) == 1 and sorted(p.name for p in texts.parent.iterdir()) == [texts.name]


def test_zero_actors_are_refused(toy_model_dir, texts, fake_ray, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["encode-parquet", str(toy_model_dir), str(texts), str(texts.with_name("o.parquet")), "--actors", "0"])
    assert info.value.code == 2
    assert "argument --actors: '0' must be a positive int" in capsys.readouterr().err
    assert fake_ray == []


@pytest.mark.parametrize("option", [["--cpus-per-actor", "2"], ["--gpus-per-actor", "1"],
                                    ["--ray-address", "127.0.0.1:6379"]])
def test_ray_options_without_ray_are_refused(toy_model_dir, texts, capsys, option) -> None:
    out = texts.with_name("o.parquet")
    assert main(["encode-parquet", str(toy_model_dir), str(texts), str(out), *option]) == 2
    assert f"{option[0]} apply on Ray only: add --ray" in _error_line(capsys)
    assert not out.exists()


def test_batch_rows_on_ray_is_refused(toy_model_dir, texts, fake_ray, capsys) -> None:
    out = texts.with_name("o.parquet")
    assert main(["encode-parquet", str(toy_model_dir), str(texts), str(out), "--ray", "--batch-rows", "8"]) == 2
    assert "--batch-rows applies in one process only, not on Ray" in _error_line(capsys)
    assert fake_ray == []
