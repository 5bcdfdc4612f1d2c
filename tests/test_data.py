"""The data pipeline on small real parquet files, real pyarrow and real tiktoken (no mocks of them)."""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing as mp
import os
import re
import shutil
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


def test_bytes_tokenizer_writes_each_documents_utf8_bytes_then_256(tmp_path):
    docs = make_docs(9)  # ñ, é and 🙂 are 2, 2 and 4 bytes
    v = write_parquet(tmp_path / "v.parquet", ["café 🙂", "thou"])
    data = prepare_data(cfg_for(tmp_path, [write_parquet(tmp_path / "a.parquet", docs)], val_files=[str(v)],
                                tokenizer="bytes"), progress=False)
    expect = lambda texts: [b for t in texts for b in [*t.encode("utf-8"), 256]]
    assert read_tokens(data.train).tolist() == expect(docs)
    assert read_tokens(data.val).tolist() == expect(["café 🙂", "thou"]) and data.val.num_tokens == 10 + 1 + 4 + 1
    assert (data.meta["tokenizer"], data.meta["vocab_size"], data.meta["eot_token"]) == ("bytes", 257, 256)
    assert load_tokenizer("bytes").decode(read_tokens(data.val)[:11].tolist()) == "café 🙂"
    r50k = prepare_data(cfg_for(tmp_path, [tmp_path / "a.parquet"], val_files=[str(v)]), progress=False)
    assert r50k.meta["key"] != data.meta["key"]  # each tokenizer its own cache


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


def in_two_processes_at_once(target, cfg) -> list:
    """What `target(cfg, barrier, queue)` puts on the queue in each of two spawned processes that
    start preparing together (the barrier); both must exit cleanly."""
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=target, args=(cfg, barrier, queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    return results


def test_two_processes_preparing_the_same_cache(tmp_path):
    plays = pq.read_table(sample_corpus_path(), columns=["text"]).column(0).to_pylist()
    docs = [p[i : i + 3000] for p in plays[:8] for i in range(0, len(p), 3000)]
    src = write_parquet(tmp_path / "docs.parquet", docs, rows_per_group=50)
    cfg = cfg_for(tmp_path, [src], val_fraction=0.05)
    (path1, meta1, tr1, va1), (path2, meta2, tr2, va2) = in_two_processes_at_once(_prepare_in_child, cfg)
    assert path1 == path2 and tr1 == tr2 and va1 == va2
    assert meta1 == meta2  # same created time: one process built, the other waited and loaded
    left = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(left) == 2 and sum(n.endswith(".lock") for n in left) == 1, left  # no temp dir left
    here = prepare_data(cfg, progress=False)
    assert here.meta == meta1


# ---------------------------------------------------------------------------------------------
# a reused cache is checked: corrupted bytes of the same size are found and rebuilt


SAMPLE_CFG = dict(name="sample", val_fraction=0.1)


@pytest.fixture(scope="module")
def sample_cache(tmp_path_factory):
    """A cache of the embedded sample, built once; tests corrupt copies of it."""
    root = tmp_path_factory.mktemp("sample_cache")
    data = prepare_data(DataConfig(cache_dir=str(root), **SAMPLE_CFG), progress=False)
    return root, data.train.path.read_bytes(), data.val.path.read_bytes()


@pytest.fixture
def copied_cache(tmp_path, sample_cache):
    """(config, train.bin path) of a private copy of the sample cache."""
    root, _, _ = sample_cache
    shutil.copytree(root, tmp_path / "cache")
    cfg = DataConfig(cache_dir=str(tmp_path / "cache"), **SAMPLE_CFG)
    (final,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    return cfg, final / "train.bin"


def later_run(cfg: DataConfig, progress: bool = False):
    """prepare_data as a new process would run it: nothing remembered as already checked."""
    data_mod._verified.clear()
    return prepare_data(cfg, progress=progress)


def overwrite_tokens(path: Path, at: int, ids) -> None:
    """Write token ids over the file at token offset `at`, in place: its size stays the same."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(at * 2)
        f.write(np.asarray(ids, dtype=np.uint16).tobytes())
    assert path.stat().st_size == size


def first_plain_token(tokens: np.ndarray, top: int) -> int:
    """Offset of a token that is neither end-of-text nor the largest id, so +1 stays a valid id."""
    return int(np.flatnonzero((tokens != EOT) & (tokens + 1 < top) & (tokens + 1 != EOT))[100])


@pytest.mark.parametrize("change", ["out_of_range", "eot_removed", "valid_id"])
def test_same_size_corruption_is_reported_and_rebuilt(copied_cache, sample_cache, capsys, change):
    cfg, train_bin = copied_cache
    _, train_bytes, val_bytes = sample_cache
    tokens = np.frombuffer(train_bytes, dtype=np.uint16)
    if change == "out_of_range":  # an id no tokenizer of 50,257 tokens has: the token check finds it
        at = 5000
        overwrite_tokens(train_bin, at, [0xFFFF, 0xFFFF])
        why = rf"holds token ids up to 65535, the first out of range at token {at:,}; r50k_base's ids are 0\.\.50256"
    elif change == "eot_removed":  # one document fewer: the end-of-text count finds it
        at = int(np.flatnonzero(tokens == EOT)[3])
        overwrite_tokens(train_bin, at, [11])
        why = r"holds 37 end-of-text tokens, but 38 documents \(one each\) were recorded"
    else:  # one valid id for another: only the checksum finds it
        at = first_plain_token(tokens, EOT)
        overwrite_tokens(train_bin, at, [tokens[at] + 1])
        why = r"does not match its sha256 checksum"
    assert train_bin.read_bytes() != train_bytes
    capsys.readouterr()
    data = later_run(cfg)
    err = capsys.readouterr().err
    assert re.fullmatch(rf"data: cache {re.escape(str(train_bin))} {why} \(corrupted\?\); rebuilding it\n", err), err
    assert data.train.path == train_bin
    assert train_bin.read_bytes() == train_bytes and data.val.path.read_bytes() == val_bytes
    assert [p.name for p in train_bin.parent.parent.iterdir() if p.name.startswith(".")] == []  # no temp dir left
    later_run(cfg)  # the rebuilt cache passes
    assert capsys.readouterr().err == ""


def test_intact_cache_is_checked_and_reused_once_per_process(copied_cache, sample_cache, monkeypatch, capsys):
    cfg, train_bin = copied_cache

    def no_tokenizing(*a, **k):
        raise AssertionError("tokenized again instead of reusing the cache")

    scans = []
    real_scan, real_tokenize = data_mod.scan_tokens, data_mod._tokenize
    monkeypatch.setattr(data_mod, "_tokenize", no_tokenizing)
    monkeypatch.setattr(data_mod, "scan_tokens", lambda *a, **k: scans.append(k) or real_scan(*a, **k))
    data = later_run(cfg, progress=True)
    assert scans == [{"checksum": True}] * 2  # train and val, each read once with its checksum
    assert re.fullmatch(r"data: reusing [\d,]+ train / [\d,]+ val tokens from 38 / 4 documents \(0 empty "
                        rf"skipped\) in {re.escape(str(train_bin.parent))}\n", capsys.readouterr().err)
    assert data.train.path.read_bytes() == sample_cache[1]
    assert data.meta["checksum"] == "sha256"
    assert data.meta["train_sha256"] == hashlib.sha256(sample_cache[1]).hexdigest()  # what sha256sum prints
    assert data.meta["val_sha256"] == hashlib.sha256(sample_cache[2]).hexdigest()
    assert data.meta["train_max_token"] == data.meta["val_max_token"] == EOT
    prepare_data(cfg, progress=False)  # the same process again (a sweep's next trial): not read again
    assert len(scans) == 2
    monkeypatch.setattr(data_mod, "_tokenize", real_tokenize)
    overwrite_tokens(train_bin, 10, [0xFFFF])
    os.utime(train_bin, ns=(time.time_ns(), time.time_ns() + 10**9))  # a distinct mtime even on coarse clocks
    prepare_data(cfg, progress=False)  # ... unless the file changed since
    assert len(scans) > 2 and train_bin.read_bytes() == sample_cache[1]


def test_large_cache_gets_token_checks_only(copied_cache, sample_cache, monkeypatch, capsys):
    cfg, train_bin = copied_cache
    _, train_bytes, _ = sample_cache
    tokens = np.frombuffer(train_bytes, dtype=np.uint16)
    monkeypatch.setattr(data_mod, "FULL_CHECK_MAX_BYTES", len(train_bytes))  # train + val is over it
    at = first_plain_token(tokens, EOT)
    overwrite_tokens(train_bin, at, [tokens[at] + 1])  # a valid id: not found without the checksum
    capsys.readouterr()
    later_run(cfg, progress=True)
    err = capsys.readouterr().err
    assert "rebuilding" not in err
    assert re.search(r"; tokens checked, sha256 not \(over [\d.e-]+ GiB; `sha256sum` of each \.bin should "
                     r"equal meta\.json's sha256 fields\)\n$", err), err
    overwrite_tokens(train_bin, 7, [50257])  # the first id past the vocabulary still is
    later_run(cfg)
    assert "holds token ids up to 50257, the first out of range at token 7" in capsys.readouterr().err
    assert train_bin.read_bytes() == train_bytes


def test_cache_from_before_checksums_is_reused_on_its_tokens(copied_cache, sample_cache, monkeypatch, capsys):
    cfg, train_bin = copied_cache
    meta_path = train_bin.parent / "meta.json"
    meta = json.loads(meta_path.read_text())
    for k in ("checksum", "train_sha256", "val_sha256", "train_max_token", "val_max_token"):
        del meta[k]
    meta_path.write_text(json.dumps(meta, indent=1))  # as the first format wrote it
    real_tokenize = data_mod._tokenize
    monkeypatch.setattr(data_mod, "_tokenize", lambda *a, **k: pytest.fail("rebuilt a sound old cache"))
    capsys.readouterr()
    data = later_run(cfg, progress=True)
    err = capsys.readouterr().err
    assert err.endswith(f"in {train_bin.parent}; made before checksums, so only its tokens were checked "
                        f"(`rm -r {train_bin.parent}` rebuilds it with one)\n"), err
    assert "checksum" not in json.loads(meta_path.read_text())  # nothing written into it
    assert data.meta == meta
    monkeypatch.setattr(data_mod, "_tokenize", real_tokenize)
    overwrite_tokens(train_bin, 3, [0xFFFF])
    data = later_run(cfg)
    assert "first out of range at token 3" in capsys.readouterr().err
    assert train_bin.read_bytes() == sample_cache[1] and data.meta["checksum"] == "sha256"


@pytest.mark.parametrize("damage", ["truncated", "meta_missing", "meta_garbled", "val_missing"])
def test_cache_that_is_not_whole_is_reported_and_rebuilt(copied_cache, sample_cache, capsys, damage):
    cfg, train_bin = copied_cache
    final = train_bin.parent
    if damage == "truncated":
        with open(train_bin, "r+b") as f:
            f.truncate(1000)
        why = rf"{re.escape(str(train_bin))} is 1,000 bytes, but meta.json records [\d,]+ tokens \([\d,]+ bytes\)"
    elif damage == "meta_missing":
        (final / "meta.json").unlink()
        why = rf"{re.escape(str(final))}/meta.json is missing or unreadable \(FileNotFoundError\)"
    elif damage == "meta_garbled":
        (final / "meta.json").write_text('{"train_tokens": 12')
        why = rf"{re.escape(str(final))}/meta.json is missing or unreadable \(JSONDecodeError\)"
    else:
        (final / "val.bin").unlink()
        why = rf"{re.escape(str(final))}/val.bin is missing"
    capsys.readouterr()
    data = later_run(cfg)
    assert re.fullmatch(rf"data: cache {why} \(corrupted\?\); rebuilding it\n", capsys.readouterr().err)
    assert train_bin.read_bytes() == sample_cache[1] and data.val.path.read_bytes() == sample_cache[2]


def test_bad_cache_that_cannot_be_rebuilt_says_how_to_clear_it(copied_cache, sample_cache, monkeypatch):
    cfg, train_bin = copied_cache
    overwrite_tokens(train_bin, 5000, [0xFFFF])
    corrupted = train_bin.read_bytes()

    def disk_full(parquet, files, val_files, column, cfg, enc, out, progress):
        (out / "train.bin").write_bytes(b"\0" * 4096)  # part of the new cache, then the disk is full
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(data_mod, "_tokenize", disk_full)
    data_mod._verified.clear()
    with pytest.raises(DataError, match=rf"^cache {re.escape(str(train_bin))} holds token ids up to 65535.*"
                                        r"and it cannot be rebuilt here \(OSError: \[Errno 28\] No space left on device\); "
                                        rf"remove it with `rm -r {re.escape(str(train_bin.parent))}` and run again$"):
        prepare_data(cfg, progress=False)
    assert train_bin.read_bytes() == corrupted  # left as it was, for the user to look at or remove
    assert sorted(p.name for p in train_bin.parent.parent.iterdir() if p.name.startswith(".")) == []
    monkeypatch.undo()
    assert later_run(cfg).train.path.read_bytes() == sample_cache[1]


def _prepare_in_child_capturing(cfg: DataConfig, barrier, queue) -> None:
    import contextlib
    import io

    err = io.StringIO()
    barrier.wait()
    with contextlib.redirect_stderr(err):
        d = prepare_data(cfg, progress=False)
    queue.put((hashlib.sha256(d.train.path.read_bytes()).hexdigest(), d.meta["created_unix"], err.getvalue()))


def test_two_processes_finding_the_same_corrupted_cache_rebuild_it_once(copied_cache, sample_cache):
    cfg, train_bin = copied_cache
    tokens = np.frombuffer(sample_cache[1], dtype=np.uint16)
    at = first_plain_token(tokens, EOT)
    overwrite_tokens(train_bin, at, [tokens[at] + 1])
    (sum1, created1, err1), (sum2, created2, err2) = in_two_processes_at_once(_prepare_in_child_capturing, cfg)
    assert sum1 == sum2 == hashlib.sha256(sample_cache[1]).hexdigest()
    assert created1 == created2  # one rebuilt it; the other, waiting on the lock, found it rebuilt
    assert sorted([err1, err2]) == ["", f"data: cache {train_bin} does not match its sha256 checksum (corrupted?); "
                                        f"rebuilding it\n"]


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
    data = prepare_data(cfg_for(tmp_path, [src], val_files=[str(val)], val_fraction=0.0), progress=False)
    assert data.meta["split"] == "val_files" and data.meta["val_fraction"] is None
    assert (data.meta["train_documents"], data.meta["val_documents"]) == (5, 2)  # every doc, by file


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
    with pytest.raises(DataError, match=r"data.tokenizer='gpt5' is not a tokenizer; valid: .*r50k_base.*bytes"):
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
