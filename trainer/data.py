"""Parquet text -> tokens (GPT-2 BPE, or UTF-8 bytes) on disk, tokenized once and reused.

Documents are streamed by record batch, reading only the text column, so peak memory does not grow
with the file; each document is followed by the end-of-text token, and the tokens are written as
uint16 `train.bin` / `val.bin` (nanoGPT's format) with a `meta.json`, under `cache_dir/<key>/`.
The key hashes everything the tokens depend on (source files with size and mtime, tokenizer, text
column, split). Val is a seeded choice of whole documents, or separate `val_files`.

A cache directory is built under an exclusive lock in a temp dir and renamed into place when
complete, so concurrent preparers and interrupted runs never leave a half cache that looks valid.

Each token file's SHA-256 and largest token id are computed while it is written and recorded in
`meta.json`. A reused cache is checked in one streamed pass per file, once per process: its
tokens (every id below the tokenizer's vocab size, the recorded largest id, one end-of-text token
per document, the last token one) always, and its checksum too when the cache holds at most
FULL_CHECK_MAX_BYTES (bench/README.md has the costs). A cache that fails is rebuilt under the
lock, with a one-line message; caches made before checksums are checked by their tokens only.
"""

from __future__ import annotations

import fcntl
import glob
import hashlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from trainer.config import DataConfig

FORMAT_VERSION = 1
DATA_NAMES = ("sample", "parquet")
SAMPLE_TEXT_COLUMN = "text"
TOKEN_DTYPE = np.uint16
READ_BATCH_ROWS = 1024  # rows per record batch; also capped by READ_BATCH_BYTES
READ_BATCH_BYTES = 16 << 20  # ~text per batch handed to tiktoken's threads
READ_BUFFER_BYTES = 1 << 22  # buffered column-chunk reads: a whole row group is never loaded at once
_GLOB_CHARS = set("*?[")
CHECKSUM = "sha256"  # hashlib name; meta.json records it as "checksum" and each file's as "<split>_sha256"
FULL_CHECK_MAX_BYTES = 2 << 30  # reused caches up to this size (train + val) get the checksum too
SCAN_CHUNK_BYTES = 4 << 20  # what one read of a token file takes when it is checked


class DataError(ValueError):
    """Bad data input; the message names the bad value and what would be valid."""


@dataclass(frozen=True)
class TokenSplit:
    """One split on disk: `num_tokens` uint16 token ids in `path`."""

    path: Path
    num_tokens: int

    def sample_batch(
        self, batch_size: int, block_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Random windows x and y = x shifted by one, int64 CPU tensors of shape (batch_size, block_size)."""
        if self.num_tokens < block_size + 1:
            raise DataError(f"{self.path} has {self.num_tokens} tokens, fewer than one window of "
                            f"block_size={block_size} + 1")
        # a fresh memmap per call, as nanoGPT does: a long-lived one leaks memory
        tokens = np.memmap(self.path, dtype=TOKEN_DTYPE, mode="r", shape=(self.num_tokens,))
        starts = torch.randint(self.num_tokens - block_size, (batch_size,), generator=generator).numpy()
        windows = tokens[starts[:, None] + np.arange(block_size + 1)].astype(np.int64)
        del tokens
        windows = torch.from_numpy(windows)
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()


@dataclass(frozen=True)
class PreparedData:
    train: TokenSplit
    val: TokenSplit
    meta: dict  # the contents of meta.json

    def check_fits(self, block_size: int) -> None:
        """Raise DataError unless each split holds at least one window of block_size + 1 tokens."""
        for name, split in (("train", self.train), ("val", self.val)):
            if split.num_tokens < block_size + 1:
                raise DataError(
                    f"the {name} split has {split.num_tokens} tokens (train {self.train.num_tokens}, "
                    f"val {self.val.num_tokens}), fewer than one window of model.block_size={block_size} + 1; "
                    f"use more data, a {'smaller' if name == 'train' else 'larger'} data.val_fraction "
                    f"(or data.val_files), or a smaller model.block_size"
                )


def sample_corpus_path() -> Path:
    """The embedded sample corpus: Shakespeare's works, one row per work (columns title, text)."""
    return Path(__file__).resolve().parent / "sample_data" / "shakespeare_plays.parquet"


class ByteTokenizer:
    """`data.tokenizer=bytes`: a document's UTF-8 bytes as ids 0..255, end-of-text 256 (nanoGPT's
    shakespeare_char idea, but lossless for any text). A vocabulary of 257 makes the output layer
    tiny, so a CPU run trains on its transformer blocks rather than on a 50k-wide softmax."""

    name = "bytes"
    n_vocab = 257
    eot_token = 256

    def encode_ordinary(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_ordinary_batch(self, texts: list[str], num_threads: int = 1) -> list[list[int]]:
        return [self.encode_ordinary(t) for t in texts]

    def decode(self, ids) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


def load_tokenizer(name: str):
    """The tokenizer `name`: a tiktoken encoding or `bytes` (the one place a tokenizer is loaded), or
    a DataError saying how to get it."""
    if name == ByteTokenizer.name:
        return ByteTokenizer()
    import tiktoken

    valid = tiktoken.list_encoding_names()
    if name not in valid:
        raise DataError(f"data.tokenizer={name!r} is not a tokenizer; valid: {', '.join(valid)}, "
                        f"{ByteTokenizer.name} (r50k_base has GPT-2's ids; {ByteTokenizer.name} is UTF-8 bytes)")
    try:
        return tiktoken.get_encoding(name)
    except Exception as e:  # no network, a blocked download, a corrupt cached file, ...
        cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
        where = f"TIKTOKEN_CACHE_DIR={cache}" if cache else "TIKTOKEN_CACHE_DIR is not set"
        raise DataError(
            f"tiktoken could not load the {name!r} encoding ({type(e).__name__}: {e}; {where}). tiktoken "
            f"downloads the BPE file on first use. Fix: set TIKTOKEN_CACHE_DIR to a folder holding that "
            f"file (tiktoken names it by the SHA-1 of its URL), or allow the download, or run once on a "
            f"machine with internet with TIKTOKEN_CACHE_DIR set and copy the folder"
        ) from None


# ---------------------------------------------------------------------------------------------
# sources and checks (all before any tokenizing)


def _resolve(patterns, what: str) -> list[Path]:
    files: list[Path] = []
    for pattern in patterns:
        expanded = os.path.expanduser(str(pattern))
        if _GLOB_CHARS & set(expanded):
            matches = [Path(m) for m in glob.glob(expanded, recursive=True) if os.path.isfile(m)]
        elif os.path.isdir(expanded):
            matches = list(Path(expanded).glob("*.parquet"))
        else:
            matches = [Path(expanded)] if os.path.isfile(expanded) else []
        if not matches:
            raise DataError(f"{what}: no file matches {pattern!r} (cwd {os.getcwd()}); give existing "
                            f"parquet files, folders of them, or globs such as '/data/*.parquet'")
        files.extend(m.resolve() for m in matches)
    return sorted(set(files))  # documents are numbered in sorted file order


def _open_parquet(path: Path, column: str) -> pq.ParquetFile:
    try:
        pf = pq.ParquetFile(path, buffer_size=READ_BUFFER_BYTES)
    except Exception as e:
        raise DataError(f"{path} is not a readable parquet file ({type(e).__name__}: {e}); "
                        f"data.files and data.val_files take parquet files only") from None
    schema = pf.schema_arrow
    if column not in schema.names:
        raise DataError(f"{path} has no text column {column!r}; its columns are: {', '.join(schema.names)} "
                        f"(set data.text_column)")
    kind = schema.field(column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)
            or getattr(pa.types, "is_string_view", lambda _: False)(kind)):
        raise DataError(f"{path}: column {column!r} has type {kind}, not text; set data.text_column "
                        f"to a string column")
    return pf


def _sources(cfg: DataConfig) -> tuple[list[Path], list[Path], str]:
    if cfg.name not in DATA_NAMES:
        raise DataError(f"data.name={cfg.name!r} is invalid; valid: {', '.join(DATA_NAMES)}")
    if cfg.name == "sample":
        return [sample_corpus_path()], [], SAMPLE_TEXT_COLUMN
    if not cfg.files:
        raise DataError("data.files is empty; data.name=parquet needs parquet paths or globs, "
                        "e.g. data.files='[/data/*.parquet]' (or use data=sample)")
    files = _resolve(cfg.files, "data.files")
    val_files = _resolve(cfg.val_files, "data.val_files") if cfg.val_files else []
    both = sorted(set(files) & set(val_files))
    if both:
        raise DataError(f"files in both data.files and data.val_files: {', '.join(map(str, both))}; "
                        f"val would leak into train")
    return files, val_files, cfg.text_column


def _fingerprint(path: Path, pf: pq.ParquetFile) -> dict:
    st = path.stat()
    md = pf.metadata
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "num_rows": md.num_rows,
            "num_row_groups": md.num_row_groups, "footer_bytes": md.serialized_size}


def _cache_key(train_fp: list, val_fp: list, column: str, tokenizer: str, cfg: DataConfig) -> str:
    by_fraction = not val_fp  # val_fraction and split_seed matter only then
    blob = json.dumps({
        "format_version": FORMAT_VERSION, "files": train_fp, "val_files": val_fp, "tokenizer": tokenizer,
        "text_column": column, "val_fraction": cfg.val_fraction if by_fraction else None,
        "split_seed": cfg.split_seed if by_fraction else None,
    }, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# the cache


class _SplitSink:
    """A token file being written, with its checksum and largest id kept as it grows."""

    def __init__(self, f):
        self.f, self.hash, self.max_token = f, hashlib.new(CHECKSUM), 0

    def write(self, arr: np.ndarray) -> None:
        arr.tofile(self.f)
        self.hash.update(arr)
        self.max_token = max(self.max_token, int(arr.max()))


@dataclass(frozen=True)
class TokenScan:
    """What one streamed pass over a token file found."""

    max_token: int
    eot_count: int
    last_token: int | None
    first_out_of_range: int | None  # index of the first id >= the limit given
    checksum: str | None  # hex digest, when asked for


def scan_tokens(path: Path, limit: int, eot: int, checksum: bool) -> TokenScan:
    """Read `path` once, SCAN_CHUNK_BYTES at a time (never the whole file), for the checks of a reused cache."""
    h = hashlib.new(CHECKSUM) if checksum else None
    buf = np.empty(SCAN_CHUNK_BYTES // 2, dtype=TOKEN_DTYPE)
    view = memoryview(buf).cast("B")
    max_token, eot_count, last, bad_at, done = 0, 0, None, None, 0
    with open(path, "rb", buffering=0) as f:
        if hasattr(os, "posix_fadvise"):  # a larger read-ahead: reading from disk overlaps the hashing
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        while n := f.readinto(view):
            if h is not None:
                h.update(view[:n])
            chunk = buf[: n // 2]
            if len(chunk):
                top = int(chunk.max())
                max_token = max(max_token, top)
                if top >= limit and bad_at is None:
                    bad_at = done + int(np.argmax(chunk >= limit))
                eot_count += int(np.count_nonzero(chunk == eot))
                last = int(chunk[-1])
            done += len(chunk)
    return TokenScan(max_token, eot_count, last, bad_at, h.hexdigest() if h is not None else None)


_verified: set = set()  # (file state, what it was checked against) of the token files this process checked


def _file_state(path: Path) -> tuple:
    """Changes whenever the file is written or replaced (ctime cannot be set back by hand)."""
    st = path.stat()
    return (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _check_split(path: Path, split: str, meta: dict, vocab_size: int, eot: int, checksum: bool) -> str | None:
    """Why the token file `path` does not hold what meta.json records, or None. With `checksum`
    (and a recorded one) its checksum is compared too; a file already checked at least as fully
    by this process, unchanged since, is not read again."""
    want = meta.get(f"{split}_{CHECKSUM}") if checksum else None
    recorded_max, documents = meta.get(f"{split}_max_token"), int(meta[f"{split}_documents"])
    state = _file_state(path)
    against = (recorded_max, documents, vocab_size, eot)
    if (state, against, want) in _verified:
        return None
    scan = scan_tokens(path, vocab_size, eot, checksum=want is not None)
    if scan.first_out_of_range is not None:
        return (f"holds token ids up to {scan.max_token}, the first out of range at token "
                f"{scan.first_out_of_range:,}; {meta.get('tokenizer')}'s ids are 0..{vocab_size - 1}")
    if recorded_max is not None and scan.max_token != recorded_max:
        return f"has largest token id {scan.max_token}, but {recorded_max} was recorded"
    if scan.last_token != eot:
        return f"ends with token {scan.last_token}, not the end-of-text token {eot} that ends every document"
    if scan.eot_count != documents:
        return (f"holds {scan.eot_count:,} end-of-text tokens, but {documents:,} documents (one each) "
                f"were recorded")
    if want is not None and scan.checksum != want:
        return f"does not match its {CHECKSUM} checksum"
    _verified.update({(state, against, want), (state, against, None)})  # checksummed covers tokens-only
    return None


def _checks_checksum(meta: dict) -> bool:
    """Whether reusing this cache checks its checksum (else only its tokens)."""
    nbytes = (meta["train_tokens"] + meta["val_tokens"]) * np.dtype(TOKEN_DTYPE).itemsize
    return meta.get("checksum") == CHECKSUM and nbytes <= FULL_CHECK_MAX_BYTES


def _load(final: Path, key: str, vocab_size: int, eot: int) -> tuple[PreparedData | None, str | None]:
    """(the cache in `final`, None) when it checks out; (None, what is wrong) when it does not;
    (None, None) when there is none."""
    if not final.exists():
        return None, None
    try:
        meta = json.loads((final / "meta.json").read_text())
    except (OSError, ValueError) as e:
        return None, f"{final}/meta.json is missing or unreadable ({type(e).__name__})"
    try:
        if not isinstance(meta, dict):
            raise TypeError(f"it holds a {type(meta).__name__}, not an object")
        if meta.get("key") != key:
            return None, f"{final}/meta.json records key {meta.get('key')!r}, not {key!r}"
        splits = [TokenSplit(final / f"{s}.bin", int(meta[f"{s}_tokens"])) for s in ("train", "val")]
        itemsize = np.dtype(TOKEN_DTYPE).itemsize
        for split in splits:
            if not split.path.is_file():
                return None, f"{split.path} is missing"
            size = split.path.stat().st_size
            if size != split.num_tokens * itemsize:
                return None, (f"{split.path} is {size:,} bytes, but meta.json records {split.num_tokens:,} "
                              f"tokens ({split.num_tokens * itemsize:,} bytes)")
        checksum = _checks_checksum(meta)
        for name, split in zip(("train", "val"), splits):
            problem = _check_split(split.path, name, meta, vocab_size, eot, checksum)
            if problem:
                return None, f"{split.path} {problem}"
    except OSError as e:
        return None, f"{final} cannot be read ({type(e).__name__}: {e})"
    except (ValueError, KeyError, TypeError) as e:
        return None, f"{final}/meta.json lacks or garbles a field ({type(e).__name__}: {e})"
    return PreparedData(splits[0], splits[1], meta), None


def _summary(data: PreparedData, final: Path, verb: str, log: Optional[Callable[[str], None]]) -> None:
    m = data.meta
    checked = ""
    if verb == "reusing":
        if m.get("checksum") != CHECKSUM:
            checked = (f"; made before checksums, so only its tokens were checked (`rm -r {final}` "
                       f"rebuilds it with one)")
        elif not _checks_checksum(m):
            checked = (f"; tokens checked, {CHECKSUM} not (over {FULL_CHECK_MAX_BYTES / 2**30:g} GiB; "
                       f"`{CHECKSUM}sum` of each .bin should equal meta.json's {CHECKSUM} fields)")
    line = (f"data: {verb} {m['train_tokens']:,} train / {m['val_tokens']:,} val tokens from "
            f"{m['train_documents']:,} / {m['val_documents']:,} documents ({m['skipped_documents']} empty "
            f"skipped) in {final}{checked}")
    if log is None:
        print(line, file=sys.stderr)
    else:
        log(line)


def _cannot_rebuild(problem: str, final: Path, e: BaseException) -> DataError:
    return DataError(f"cache {problem}, and it cannot be rebuilt here ({type(e).__name__}: {e}); "
                     f"remove it with `rm -r {final}` and run again")


def _install(tmp: Path, final: Path) -> None:
    """Put the complete cache in `tmp` at `final`. Over a bad cache, file by file (each an atomic
    rename, meta.json last), so a process still reading `final` opens a whole file at every moment."""
    if not final.exists():
        os.rename(tmp, final)  # the cache appears whole or not at all
        return
    for name in ("train.bin", "val.bin", "meta.json"):
        os.replace(tmp / name, final / name)
    fd = os.open(final, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    shutil.rmtree(tmp, ignore_errors=True)


def _check_split_and_tokenizer(cfg: DataConfig, files: list, val_files: list, parquet: dict):
    """The tokenizer, once the split can be made (a val share of at least two documents) and its
    ids fit the uint16 token files; DataError naming the setting otherwise."""
    if not val_files:
        if not 0.0 < cfg.val_fraction < 1.0:
            raise DataError(f"data.val_fraction={cfg.val_fraction} is invalid; it must be in (0, 1), "
                            f"or give data.val_files")
        n_docs = sum(parquet[p].metadata.num_rows for p in files)
        if n_docs < 2:
            raise DataError(f"data.files hold {n_docs} document(s); a val split by document needs at "
                            f"least 2, or give data.val_files")
    enc = load_tokenizer(cfg.tokenizer)
    if enc.n_vocab > np.iinfo(TOKEN_DTYPE).max + 1:
        raise DataError(f"data.tokenizer={cfg.tokenizer!r} has {enc.n_vocab} tokens; the uint16 token "
                        f"files hold at most 65536; use r50k_base / gpt2 / p50k_base")
    return enc


def _write_meta(tmp: Path, meta: dict, cfg: DataConfig, enc, column: str, by_files: bool, sources: dict) -> None:
    """meta.json of a cache being built in `tmp`: what `_tokenize` counted plus how it was made."""
    meta.update(
        tokenizer=cfg.tokenizer, eot_token=enc.eot_token, vocab_size=enc.n_vocab,
        dtype=np.dtype(TOKEN_DTYPE).name, text_column=column,
        split="val_files" if by_files else "val_fraction",
        val_fraction=None if by_files else cfg.val_fraction,
        split_seed=None if by_files else cfg.split_seed,
        sources=sources,
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"), created_unix=time.time(),
    )
    with open(tmp / "meta.json", "w") as f:
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def prepare_data(cfg: DataConfig, progress: bool = True,
                 log: Optional[Callable[[str], None]] = None) -> PreparedData:
    """Tokenize the configured source into the cache (once) and return its splits.

    `progress=False` silences the progress bar and the summary line (not the line saying that a
    bad cache is being rebuilt); `log` takes the summary line instead of stderr.
    """
    files, val_files, column = _sources(cfg)
    parquet = {p: _open_parquet(p, column) for p in files + val_files}  # every check before tokenizing
    enc = _check_split_and_tokenizer(cfg, files, val_files, parquet)
    train_fp = [_fingerprint(p, parquet[p]) for p in files]
    val_fp = [_fingerprint(p, parquet[p]) for p in val_files]
    key = _cache_key(train_fp, val_fp, column, cfg.tokenizer, cfg)
    root = Path(cfg.cache_dir).expanduser().resolve()
    final = root / key[:20]
    data, problem = _load(final, key, enc.n_vocab, enc.eot_token)
    if data is not None:
        if progress:
            _summary(data, final, "reusing", log)
        return data
    try:
        root.mkdir(parents=True, exist_ok=True)
        lock = open(root / f"{key[:20]}.lock", "a")
    except OSError as e:
        if problem:
            raise _cannot_rebuild(problem, final, e) from None
        raise
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second preparer waits here, then finds the cache
        data, problem = _load(final, key, enc.n_vocab, enc.eot_token)  # another may have rebuilt it
        if data is not None:
            if progress:
                _summary(data, final, "reusing", log)
            return data
        if problem:
            print(f"data: cache {problem} (corrupted?); rebuilding it", file=sys.stderr, flush=True)
        try:
            # holding the lock, nobody else is building this key: what is left is from a killed run
            for stale in root.glob(f".{key[:20]}.*"):
                shutil.rmtree(stale, ignore_errors=True)
            if final.exists() and not final.is_dir():
                final.unlink()
            tmp = Path(tempfile.mkdtemp(prefix=f".{key[:20]}.", dir=root))
        except OSError as e:
            if problem:
                raise _cannot_rebuild(problem, final, e) from None
            raise
        try:
            meta = {"format_version": FORMAT_VERSION, "key": key,
                    **_tokenize(parquet, files, val_files, column, cfg, enc, tmp, progress)}
            _write_meta(tmp, meta, cfg, enc, column, bool(val_files), {"files": train_fp, "val_files": val_fp})
            _install(tmp, final)
        except OSError as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if problem:  # e.g. no room for the new cache next to the bad one, or no write permission
                raise _cannot_rebuild(problem, final, e) from None
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    data, problem = _load(final, key, enc.n_vocab, enc.eot_token)
    if data is None:
        raise DataError(f"the cache just written to {final} does not read back ({problem}); is {root} "
                        f"shared with another program writing or deleting files, or is the disk failing?")
    if progress:
        _summary(data, final, "prepared", log)
    return data


def _read_batches(pf: pq.ParquetFile, column: str):
    """Lists of texts from `pf`, read a record batch at a time, regrouped to about READ_BATCH_ROWS
    rows or READ_BATCH_BYTES of text, whichever is first (small row groups still keep tiktoken's
    threads busy; large ones are never held whole)."""
    md = pf.metadata
    leaf = [i for i in range(md.num_columns) if md.schema.column(i).path == column]
    pending: list = []
    pending_bytes = 0
    for rg in range(md.num_row_groups):
        group = md.row_group(rg)
        if group.num_rows == 0:
            continue
        nbytes = group.column(leaf[0]).total_uncompressed_size if leaf else 0
        per_row = max(1, nbytes // group.num_rows)
        rows = int(max(1, min(READ_BATCH_ROWS, READ_BATCH_BYTES // per_row)))
        for batch in pf.iter_batches(batch_size=rows, row_groups=[rg], columns=[column]):
            pending.extend(batch.column(0).to_pylist())
            pending_bytes += batch.nbytes
            if len(pending) >= READ_BATCH_ROWS or pending_bytes >= READ_BATCH_BYTES:
                yield pending
                pending, pending_bytes = [], 0
    if pending:
        yield pending


def _tokenize(parquet, files, val_files, column, cfg, enc, out: Path, progress: bool) -> dict:
    from tqdm import tqdm

    if val_files:
        val_docs = None
    else:
        n_docs = sum(parquet[p].metadata.num_rows for p in files)
        n_val = min(n_docs - 1, max(1, round(cfg.val_fraction * n_docs)))
        rng = np.random.default_rng(cfg.split_seed)
        val_docs = np.zeros(n_docs, dtype=bool)
        val_docs[rng.choice(n_docs, size=n_val, replace=False)] = True
    counts = {"train_tokens": 0, "val_tokens": 0, "train_documents": 0, "val_documents": 0,
              "skipped_documents": 0, "train_skipped_documents": 0, "val_skipped_documents": 0}
    eot = enc.eot_token
    threads = max(1, min(8, os.cpu_count() or 1))
    total_rows = sum(parquet[p].metadata.num_rows for p in files + val_files)
    bar = tqdm(total=total_rows, unit="doc", disable=not progress, file=sys.stderr, desc="tokenizing",
               dynamic_ncols=True, mininterval=0.5)
    t0 = time.perf_counter()
    with open(out / "train.bin", "wb") as train_f, open(out / "val.bin", "wb") as val_f:
        sinks = {False: _SplitSink(train_f), True: _SplitSink(val_f)}
        doc_index = 0
        for path in files + val_files:
            in_val_file = val_docs is None and path in val_files
            for texts in _read_batches(parquet[path], column):
                if val_docs is None:
                    to_val = [in_val_file] * len(texts)
                else:
                    to_val = val_docs[doc_index : doc_index + len(texts)].tolist()
                    doc_index += len(texts)
                kept = [(t, v) for t, v in zip(texts, to_val) if t]
                n_skipped = len(texts) - len(kept)
                if n_skipped:
                    skipped_val = sum(1 for t, v in zip(texts, to_val) if not t and v)
                    counts["skipped_documents"] += n_skipped
                    counts["val_skipped_documents"] += skipped_val
                    counts["train_skipped_documents"] += n_skipped - skipped_val
                ids = enc.encode_ordinary_batch([t for t, _ in kept], num_threads=threads)
                for goes_val in (False, True):
                    docs = [d for d, (_, v) in zip(ids, kept) if v == goes_val]
                    if not docs:
                        continue
                    n = sum(len(d) for d in docs) + len(docs)
                    arr = np.fromiter(
                        itertools.chain.from_iterable(itertools.chain(d, (eot,)) for d in docs),
                        dtype=TOKEN_DTYPE, count=n,
                    )
                    sinks[goes_val].write(arr)
                    split = "val" if goes_val else "train"
                    counts[f"{split}_tokens"] += n
                    counts[f"{split}_documents"] += len(docs)
                bar.update(len(texts))
                if progress:
                    done = counts["train_tokens"] + counts["val_tokens"]
                    bar.set_postfix_str(f"{done / 1e6:.1f}M tok, {done / (time.perf_counter() - t0) / 1e6:.2f}M tok/s",
                                        refresh=False)
        for sink in sinks.values():
            sink.f.flush()
            os.fsync(sink.f.fileno())
    bar.close()
    counts["checksum"] = CHECKSUM
    for goes_val, split in ((False, "train"), (True, "val")):
        counts[f"{split}_{CHECKSUM}"] = sinks[goes_val].hash.hexdigest()
        counts[f"{split}_max_token"] = sinks[goes_val].max_token
    if counts["train_tokens"] == 0 or counts["val_tokens"] == 0:
        raise DataError(f"after skipping {counts['skipped_documents']} null/empty texts the data has "
                        f"{counts['train_tokens']} train and {counts['val_tokens']} val tokens; both must be > 0 "
                        f"(a larger data.val_fraction, another data.split_seed, or non-empty data.val_files)")
    return counts
