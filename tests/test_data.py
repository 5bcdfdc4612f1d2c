"""The data pipeline on small real parquet files, real pyarrow and real tiktoken (no mocks of them)."""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import trainer.data as data_mod
from trainer.config import DataConfig
from trainer.data import DataError, load_tokenizer, prepare_data, sample_corpus_path

EOT = 50256


@pytest.fixture(scope="module")
def enc():
    return load_tokenizer("r50k_base")


def write_parquet(path: Path, texts, rows_per_group: int = 3, column: str = "text", extra: bool = True) -> Path:
    cols = {column: pa.array(texts, pa.string())}
    if extra:
        cols["id"] = pa.array(range(len(texts)), pa.int64())
    pq.write_table(pa.table(cols), path, row_group_size=rows_per_group)
    return path


def make_docs(n: int, tag: str = "doc") -> list[str]:
    words = ["thee", "thou", "hath", "crown", "sword", "night", "love", "ñame", "café", "🙂", "  ", "\n"]
    return [f"{tag} {i}: " + " ".join(words[(i * 7 + k) % len(words)] for k in range(5 + i % 9)) for i in range(n)]


def cfg_for(tmp_path: Path, files, **kw) -> DataConfig:
    kw.setdefault("cache_dir", str(tmp_path / "cache"))
    return DataConfig(name="parquet", files=[str(f) for f in files], **kw)


def read_tokens(split) -> np.ndarray:
    return np.fromfile(split.path, dtype=np.uint16)


def split_docs(tokens: np.ndarray) -> list[list[int]]:
    """Token sequences between end-of-text tokens (every document ends with one)."""
    assert len(tokens) and tokens[-1] == EOT
    ends = np.flatnonzero(tokens == EOT)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [tokens[s:e].tolist() for s, e in zip(starts, ends)]


# ---------------------------------------------------------------------------------------------
# tokens and splits


def test_tokens_are_encode_ordinary_plus_eot_per_document(tmp_path, enc):
    train_docs, val_docs = make_docs(20, "train"), make_docs(7, "val")
    a = write_parquet(tmp_path / "a.parquet", train_docs[:11])
    b = write_parquet(tmp_path / "b.parquet", train_docs[11:], rows_per_group=2)
    v = write_parquet(tmp_path / "v.parquet", val_docs)
    data = prepare_data(cfg_for(tmp_path, [b, a], val_files=[str(v)]), progress=False)  # files get sorted
    expect = lambda docs: np.array([t for d in docs for t in enc.encode_ordinary(d) + [enc.eot_token]])
    assert np.array_equal(read_tokens(data.train), expect(train_docs))
    assert np.array_equal(read_tokens(data.val), expect(val_docs))
    m = data.meta
    assert (m["train_documents"], m["val_documents"], m["skipped_documents"]) == (20, 7, 0)
    assert m["train_tokens"] == data.train.num_tokens == len(expect(train_docs))
    assert m["eot_token"] == EOT and m["tokenizer"] == "r50k_base" and m["split"] == "val_files"
    assert [Path(f["path"]).name for f in m["sources"]["files"]] == ["a.parquet", "b.parquet"]
    assert all(f["size"] > 0 for f in m["sources"]["files"] + m["sources"]["val_files"])


def test_val_split_is_by_document_and_seeded(tmp_path, enc):
    docs = make_docs(60)
    src = write_parquet(tmp_path / "docs.parquet", docs, rows_per_group=7)

    def split(seed, cache):
        d = prepare_data(cfg_for(tmp_path, [src], val_fraction=0.2, split_seed=seed, cache_dir=str(tmp_path / cache)),
                         progress=False)
        return [enc.decode(x) for x in split_docs(read_tokens(d.train))], [enc.decode(x) for x in split_docs(read_tokens(d.val))]

    train, val = split(1, "c1")
    assert len(val) == 12 and len(train) == 48  # round(0.2 * 60) whole documents
    assert not set(val) & set(train)
    assert sorted(train + val) == sorted(docs)
    assert train == [d for d in docs if d in set(train)]  # file order kept within each split
    assert split(1, "c2") == (train, val)  # same seed, fresh cache: same split
    assert set(split(2, "c3")[1]) != set(val)  # another seed: another split


def test_val_fraction_rounds_to_at_least_one_document(tmp_path):
    src = write_parquet(tmp_path / "docs.parquet", make_docs(10))
    data = prepare_data(cfg_for(tmp_path, [src], val_fraction=0.001), progress=False)
    assert (data.meta["train_documents"], data.meta["val_documents"]) == (9, 1)


def test_null_and_empty_texts_are_skipped_and_counted(tmp_path, enc):
    docs = make_docs(12)
    texts = [None, docs[0], "", docs[1], None] + docs[2:] + [""]
    v = write_parquet(tmp_path / "v.parquet", ["val text", None, ""])
    src = write_parquet(tmp_path / "docs.parquet", texts, rows_per_group=2)
    data = prepare_data(cfg_for(tmp_path, [src], val_files=[str(v)]), progress=False)
    m = data.meta
    assert m["skipped_documents"] == 6 and m["train_skipped_documents"] == 4 and m["val_skipped_documents"] == 2
    assert (m["train_documents"], m["val_documents"]) == (12, 1)
    assert [enc.decode(d) for d in split_docs(read_tokens(data.train))] == docs


def test_sample_batch_windows_shift_by_one_and_are_deterministic(tmp_path):
    src = write_parquet(tmp_path / "docs.parquet", make_docs(40))
    data = prepare_data(cfg_for(tmp_path, [src], val_fraction=0.25), progress=False)
    tokens = read_tokens(data.train)
    x, y = data.train.sample_batch(5, 16, torch.Generator().manual_seed(3))
    assert x.shape == y.shape == (5, 16) and x.dtype == y.dtype == torch.int64 and x.device.type == "cpu"
    assert torch.equal(x[:, 1:], y[:, :-1])
    for row in x.numpy():  # every row is a real window of the file
        starts = np.flatnonzero(tokens[: len(tokens) - 16] == row[0])
        assert any(np.array_equal(tokens[s : s + 16], row) for s in starts)
    x2, y2 = data.train.sample_batch(5, 16, torch.Generator().manual_seed(3))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    x3, _ = data.train.sample_batch(5, 16, torch.Generator().manual_seed(4))
    assert not torch.equal(x, x3)


def test_check_fits_names_the_counts(tmp_path):
    src = write_parquet(tmp_path / "docs.parquet", make_docs(10))
    data = prepare_data(cfg_for(tmp_path, [src], val_fraction=0.1), progress=False)
    data.check_fits(8)
    n_train, n_val = data.train.num_tokens, data.val.num_tokens
    assert n_val < 100 < n_train
    with pytest.raises(DataError, match=rf"the val split has {n_val} tokens \(train {n_train}, val {n_val}\).*block_size=100"
                                        r".*a larger data.val_fraction"):
        data.check_fits(100)
    with pytest.raises(DataError, match=rf"the train split has {n_train} tokens.*block_size=1024"
                                        r".*a smaller data.val_fraction"):
        data.check_fits(1024)


# ---------------------------------------------------------------------------------------------
# the cache


def test_cache_is_reused_without_tokenizing_again(tmp_path, monkeypatch):
    src = write_parquet(tmp_path / "docs.parquet", make_docs(30))
    cfg = cfg_for(tmp_path, [src], val_fraction=0.1)
    first = prepare_data(cfg, progress=False)
    mtime = first.train.path.stat().st_mtime_ns

    def no_tokenizing(*a, **k):
        raise AssertionError("tokenized again instead of reusing the cache")

    monkeypatch.setattr(data_mod, "_tokenize", no_tokenizing)
    again = prepare_data(cfg, progress=False)
    assert again == first and first.train.path.stat().st_mtime_ns == mtime
    entries = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len([e for e in entries if not e.endswith(".lock")]) == 1, entries


def test_changed_source_or_settings_change_the_key(tmp_path, enc):
    src = tmp_path / "docs.parquet"
    write_parquet(src, make_docs(30))
    cfg = cfg_for(tmp_path, [src], val_fraction=0.1)
    first = prepare_data(cfg, progress=False)
    write_parquet(src, make_docs(30, "changed"))
    os.utime(src, ns=(time.time_ns(), time.time_ns() + 10**9))  # a different mtime even on coarse clocks
    second = prepare_data(cfg, progress=False)
    assert second.meta["key"] != first.meta["key"] and second.train.path.parent != first.train.path.parent
    assert enc.decode(read_tokens(second.train)[:20].tolist()).startswith("changed")
    for change in ({"split_seed": 7}, {"val_fraction": 0.2}, {"text_column": "other"}):
        if "text_column" in change:
            write_parquet(src, make_docs(30), column="other")
        other = prepare_data(cfg_for(tmp_path, [src], **{"val_fraction": 0.1, **change}), progress=False)
        assert other.meta["key"] not in (first.meta["key"], second.meta["key"]), change


def test_interrupted_build_leaves_no_cache_and_next_run_builds(tmp_path, monkeypatch):
    src = write_parquet(tmp_path / "docs.parquet", make_docs(30), rows_per_group=2)
    cfg = cfg_for(tmp_path, [src], val_fraction=0.1)
    real_read = data_mod._read_batches

    def interrupted(*a, **k):
        gen = real_read(*a, **k)
        yield next(gen)
        raise KeyboardInterrupt  # Ctrl-C after the first batch was written

    monkeypatch.setattr(data_mod, "_read_batches", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_data(cfg, progress=False)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.undo()
    data = prepare_data(cfg, progress=False)
    assert data.meta["train_documents"] + data.meta["val_documents"] == 30


def test_incomplete_cache_dir_is_not_taken_as_valid(tmp_path):
    src = write_parquet(tmp_path / "docs.parquet", make_docs(30))
    cfg = cfg_for(tmp_path, [src], val_fraction=0.1)
    data = prepare_data(cfg, progress=False)
    expect = read_tokens(data.train)
    with open(data.train.path, "r+b") as f:  # a truncated token file
        f.truncate(10)
    again = prepare_data(cfg, progress=False)
    assert np.array_equal(read_tokens(again.train), expect)
    # a dead run's temp dir is cleaned on the next build of the same key
    stale = tmp_path / "cache" / f".{again.train.path.parent.name}.dead"
    stale.mkdir()
    (again.train.path.parent / "meta.json").unlink()
    prepare_data(cfg, progress=False)
    assert not stale.exists()


def _prepare_in_child(cfg: DataConfig, barrier, queue) -> None:
    barrier.wait()
    d = prepare_data(cfg, progress=False)
    digest = lambda s: hashlib.sha256(s.path.read_bytes()).hexdigest()
    queue.put((str(d.train.path), d.meta, digest(d.train), digest(d.val)))


def test_two_processes_preparing_the_same_cache(tmp_path):
    plays = pq.read_table(sample_corpus_path(), columns=["text"]).column(0).to_pylist()
    docs = [p[i : i + 3000] for p in plays[:8] for i in range(0, len(p), 3000)]
    src = write_parquet(tmp_path / "docs.parquet", docs, rows_per_group=50)
    cfg = cfg_for(tmp_path, [src], val_fraction=0.05)
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_prepare_in_child, args=(cfg, barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    (path1, meta1, tr1, va1), (path2, meta2, tr2, va2) = results
    assert path1 == path2 and tr1 == tr2 and va1 == va2
    assert meta1 == meta2  # same created time: one process built, the other waited and loaded
    left = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(left) == 2 and sum(n.endswith(".lock") for n in left) == 1, left  # no temp dir left
    here = prepare_data(cfg, progress=False)
    assert here.meta == meta1


# ---------------------------------------------------------------------------------------------
# bad input: DataError before any tokenizing, naming the bad value


@pytest.fixture
def never_tokenize(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("tokenizing started before the input was checked")

    monkeypatch.setattr(data_mod, "_tokenize", fail)


def test_unknown_data_name(tmp_path, never_tokenize):
    with pytest.raises(DataError, match=r"data.name='shakespear'.*valid: sample, parquet"):
        prepare_data(DataConfig(name="shakespear", cache_dir=str(tmp_path)), progress=False)


def test_empty_files_list(tmp_path, never_tokenize):
    with pytest.raises(DataError, match=r"data.files is empty"):
        prepare_data(DataConfig(name="parquet", files=[], cache_dir=str(tmp_path)), progress=False)


def test_pattern_matching_nothing_is_named(tmp_path, never_tokenize):
    good = write_parquet(tmp_path / "a.parquet", make_docs(5))
    pattern = str(tmp_path / "missing" / "*.parquet")
    with pytest.raises(DataError, match=re.escape(repr(pattern))):
        prepare_data(cfg_for(tmp_path, [good, pattern]), progress=False)
    with pytest.raises(DataError, match=r"data.val_files: no file matches 'nope.parquet'"):
        prepare_data(cfg_for(tmp_path, [good], val_files=["nope.parquet"]), progress=False)


def test_globs_folders_and_home_are_expanded(tmp_path, monkeypatch, enc):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "d").mkdir()
    for i in range(3):
        write_parquet(tmp_path / "d" / f"part{i}.parquet", make_docs(4, f"p{i}"))
    by_glob = prepare_data(cfg_for(tmp_path, ["~/d/part*.parquet"], val_fraction=0.25), progress=False)
    by_dir = prepare_data(cfg_for(tmp_path, [tmp_path / "d"], val_fraction=0.25), progress=False)
    assert by_glob.meta["key"] == by_dir.meta["key"]
    assert len(by_glob.meta["sources"]["files"]) == 3


def test_file_that_is_not_parquet_is_named(tmp_path, never_tokenize):
    bad = tmp_path / "notes.parquet"
    bad.write_text("just some text\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(bad))} is not a readable parquet file"):
        prepare_data(cfg_for(tmp_path, [bad]), progress=False)


def test_missing_text_column_lists_the_columns(tmp_path, never_tokenize):
    src = write_parquet(tmp_path / "a.parquet", make_docs(5), column="content")
    with pytest.raises(DataError, match=r"no text column 'text'; its columns are: content, id"):
        prepare_data(cfg_for(tmp_path, [src]), progress=False)
    with pytest.raises(DataError, match=r"column 'id' has type int64"):
        prepare_data(cfg_for(tmp_path, [src], text_column="id"), progress=False)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_val_fraction_outside_open_interval(tmp_path, never_tokenize, fraction):
    src = write_parquet(tmp_path / "a.parquet", make_docs(5))
    with pytest.raises(DataError, match=rf"data.val_fraction={fraction} is invalid.*\(0, 1\)"):
        prepare_data(cfg_for(tmp_path, [src], val_fraction=fraction), progress=False)


def test_val_fraction_is_ignored_with_val_files(tmp_path):
    src = write_parquet(tmp_path / "a.parquet", make_docs(5))
    val = write_parquet(tmp_path / "v.parquet", make_docs(2))
    prepare_data(cfg_for(tmp_path, [src], val_files=[str(val)], val_fraction=0.0), progress=False)


def test_single_document_cannot_be_split(tmp_path, never_tokenize):
    src = write_parquet(tmp_path / "a.parquet", make_docs(1))
    with pytest.raises(DataError, match=r"hold 1 document\(s\)"):
        prepare_data(cfg_for(tmp_path, [src]), progress=False)


def test_same_file_in_train_and_val(tmp_path, never_tokenize):
    src = write_parquet(tmp_path / "a.parquet", make_docs(5))
    with pytest.raises(DataError, match=r"both data.files and data.val_files"):
        prepare_data(cfg_for(tmp_path, [src], val_files=[str(src)]), progress=False)


def test_bad_tokenizer_names(tmp_path, never_tokenize):
    src = write_parquet(tmp_path / "a.parquet", make_docs(5))
    with pytest.raises(DataError, match=r"data.tokenizer='gpt5' is not a tiktoken encoding; valid: .*r50k_base"):
        prepare_data(cfg_for(tmp_path, [src], tokenizer="gpt5"), progress=False)


def test_tokenizer_that_cannot_load_says_how_to_fix(monkeypatch):
    import tiktoken.load
    import tiktoken.registry

    def offline(*a, **k):
        raise ConnectionError("no route to host")

    monkeypatch.delitem(tiktoken.registry.ENCODINGS, "p50k_base", raising=False)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", offline)
    with pytest.raises(DataError, match=r"'p50k_base'.*ConnectionError.*set TIKTOKEN_CACHE_DIR.*allow the download"):
        load_tokenizer("p50k_base")


# ---------------------------------------------------------------------------------------------
# the embedded sample corpus


def _normalise_title(title: str) -> str:
    words = re.sub(r"[^a-z0-9 ]+", " ", title.lower().replace("'", "")).split()
    return " ".join(w for w in words if w not in {"the", "a", "of", "and", "king", "tragedy"})


def test_sample_corpus_has_one_document_per_work():
    table = pq.read_table(sample_corpus_path())
    assert table.column_names == ["title", "text"]
    titles, texts = table.column("title").to_pylist(), table.column("text").to_pylist()
    assert len(titles) >= 30
    assert titles == sorted(titles)
    assert len({_normalise_title(t) for t in titles}) == len(titles)
    assert len(set(texts)) == len(texts) and all(len(t) > 1000 for t in texts)
    folio = re.compile(r"Actus (Primus|Secundus|Tertius|Quartus|Quintus)", re.IGNORECASE)
    assert not [t for t, x in zip(titles, texts) if folio.search(x)]  # no First Folio duplicates
    assert not [t for t, x in zip(titles, texts) if "gutenberg" in x.lower()]  # no licence boilerplate
    assert (sample_corpus_path().parent / "ATTRIBUTION.md").is_file()


def test_sample_corpus_prepares_with_disjoint_splits(tmp_path, enc):
    cfg = DataConfig(name="sample", val_fraction=0.1, cache_dir=str(tmp_path / "cache"), text_column="ignored")
    data = prepare_data(cfg, progress=False)
    m = data.meta
    assert m["train_documents"] + m["val_documents"] == pq.ParquetFile(sample_corpus_path()).metadata.num_rows
    assert m["val_documents"] == 4 and m["skipped_documents"] == 0 and m["text_column"] == "text"
    train = {tuple(d) for d in split_docs(read_tokens(data.train))}
    val = {tuple(d) for d in split_docs(read_tokens(data.val))}
    assert len(val) == 4 and not train & val
    data.check_fits(1024)
