"""Each corpus reader returns exactly the documents written, and names the file, line or field it cannot read."""

import gzip
import json

import pytest

from archzoo.data import DataConfig, DataError, load_documents, read_documents

DOCS = [
    "The first document.\nIt has two lines.\n",
    "Ünïcödé, 日本語 and an emoji 🙂.",
    "   leading spaces and a tab\t",
    "",
    "Last one, no newline",
]


def _write_text_files(folder, docs, suffix=".txt"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, doc in enumerate(docs):
        (folder / f"doc{i:02d}{suffix}").write_bytes(doc.encode("utf-8"))


def test_text_one_document_per_file_via_glob(tmp_path):
    _write_text_files(tmp_path / "corpus", DOCS)
    (tmp_path / "corpus" / "notes.md").write_text("not matched by the glob")
    got = read_documents(str(tmp_path / "corpus" / "*.txt"))
    assert got == DOCS


def test_text_recursive_glob_in_sorted_path_order(tmp_path):
    _write_text_files(tmp_path / "b", ["from b"])
    _write_text_files(tmp_path / "a" / "deep", ["from a/deep"])
    got = read_documents(str(tmp_path / "**" / "*.txt"))
    assert got == ["from a/deep", "from b"]


def test_text_blank_lines_split(tmp_path):
    docs = ["one line", "two\nlines", "Ünïcödé\nthree\nlines"]
    path = tmp_path / "book.txt"
    path.write_text("\n\n" + "\n\n\n".join(docs) + "\n   \n", encoding="utf-8")
    assert read_documents(path, text_documents="blank_lines") == docs
    cfg = DataConfig(source=str(path), text_documents="blank_lines")
    assert load_documents(cfg) == docs


def test_text_crlf_becomes_newline(tmp_path):
    path = tmp_path / "crlf.txt"
    path.write_bytes(b"a\r\nb\r\n")
    assert read_documents(path) == ["a\nb\n"]


def test_jsonl_reads_named_field(tmp_path):
    path = tmp_path / "c.jsonl"
    lines = [json.dumps({"id": i, "body": d, "text": "other"}) for i, d in enumerate(DOCS)]
    path.write_text("\n".join(lines[:2]) + "\n\n" + "\n".join(lines[2:]) + "\n", encoding="utf-8")
    assert read_documents(path, field="body") == DOCS
    assert load_documents(DataConfig(source=str(path), field="body")) == DOCS


def test_jsonl_gzip_glob(tmp_path):
    for part, docs in enumerate([DOCS[:2], DOCS[2:]]):
        with gzip.open(tmp_path / f"part{part}.jsonl.gz", "wt", encoding="utf-8") as f:
            for d in docs:
                f.write(json.dumps({"text": d}) + "\n")
    assert read_documents(str(tmp_path / "part*.jsonl.gz")) == DOCS


@pytest.mark.parametrize(
    "bad_line, words",
    [
        ("{not json", ["line 3", "not valid JSON"]),
        (json.dumps({"body": "x"}), ["line 3", "'text'", "'body'"]),
        (json.dumps({"text": 7}), ["line 3", "'text'", "string", "int"]),
        (json.dumps(["text"]), ["line 3", "JSON object"]),
    ],
)
def test_jsonl_errors_name_file_line_and_field(tmp_path, bad_line, words):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([json.dumps({"text": "ok"}), json.dumps({"text": "ok"}), bad_line]) + "\n")
    with pytest.raises(DataError) as e:
        read_documents(path)
    message = str(e.value)
    assert str(path) in message
    for word in words:
        assert word in message


def test_parquet_reads_named_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": DOCS[:3], "n": [1, 2, 3]}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"content": DOCS[3:], "n": [4, 5]}), tmp_path / "b.parquet")
    assert read_documents(str(tmp_path / "*.parquet"), field="content") == DOCS


def test_parquet_missing_column_and_null_are_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"content": ["x", None, "z"]}), path)
    with pytest.raises(DataError, match="no column 'text'") as e:
        read_documents(path)
    assert str(path) in str(e.value) and "content" in str(e.value)
    with pytest.raises(DataError, match="row 1") as e:
        read_documents(path, field="content")
    assert str(path) in str(e.value)


def test_hf_save_to_disk_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_dict({"text": DOCS, "label": list(range(len(DOCS)))})
    ds.save_to_disk(str(tmp_path / "one"), num_shards=2)
    assert read_documents(tmp_path / "one") == DOCS
    assert load_documents(DataConfig(source=str(tmp_path / "one"), format="hf_disk")) == DOCS

    other = datasets.Dataset.from_dict({"text": ["held out"]})
    datasets.DatasetDict({"train": ds, "test": other}).save_to_disk(str(tmp_path / "dict"))
    assert read_documents(tmp_path / "dict") == DOCS
    assert read_documents(tmp_path / "dict" / "test") == ["held out"]
    with pytest.raises(DataError, match="no column 'body'") as e:
        read_documents(tmp_path / "one", field="body")
    assert str(tmp_path / "one") in str(e.value)


def test_missing_path_is_named(tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(DataError) as e:
        load_documents(DataConfig(source=str(missing)))
    assert str(missing) in str(e.value)
    pattern = str(tmp_path / "*.parquet")
    with pytest.raises(DataError) as e:
        read_documents(pattern)
    assert pattern in str(e.value)


@pytest.mark.parametrize("name, content", [("empty.txt", ""), ("empty.jsonl", "\n\n"), ("blank.jsonl", '{"text": ""}\n')])
def test_empty_corpus_is_named(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match="empty corpus") as e:
        read_documents(path)
    assert str(path) in str(e.value)


def test_plain_folder_and_mixed_formats_are_refused(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "b.jsonl").write_text('{"text": "y"}\n')
    with pytest.raises(DataError, match="glob") as e:
        read_documents(tmp_path)
    assert str(tmp_path) in str(e.value)
    with pytest.raises(DataError, match="different formats"):
        read_documents(str(tmp_path / "*"))
    assert read_documents(str(tmp_path / "*"), format="text") == ["x", '{"text": "y"}\n']


def test_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1"))
    with pytest.raises(DataError, match="UTF-8") as e:
        read_documents(path)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("content", [" \n\t\n", "\n\n\n"])
@pytest.mark.parametrize("text_documents", ["file", "blank_lines"])
def test_whitespace_only_corpus_is_named(tmp_path, content, text_documents):
    path = tmp_path / "blank.txt"
    path.write_text(content)
    with pytest.raises(DataError, match="empty corpus") as e:
        read_documents(path, text_documents=text_documents)
    assert str(path) in str(e.value)


def test_glob_reads_a_file_and_its_symlinks_once(tmp_path):
    # /usr/share/common-licenses holds GPL -> GPL-3; the text must not count as two documents.
    licenses = tmp_path / "licenses"
    licenses.mkdir()
    (licenses / "GPL-3").write_text("the third version")
    (licenses / "MIT").write_text("permission is granted")
    (licenses / "GPL").symlink_to("GPL-3")
    (licenses / "latest").symlink_to(licenses / "GPL")  # a link to a link
    (tmp_path / "elsewhere.txt").write_text("outside the folder")
    (licenses / "outside").symlink_to(tmp_path / "elsewhere.txt")  # a link is still followed
    got = read_documents(str(licenses / "*"), format="text")
    assert sorted(got) == sorted(["the third version", "permission is granted", "outside the folder"])
    # The first path in sorted order stands for the file.
    assert got == ["the third version", "permission is granted", "outside the folder"]
