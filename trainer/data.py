"""Parquet text -> GPT-2 BPE tokens on disk, tokenized once and reused.

Documents are streamed by record batch (peak memory does not grow with the file), each followed
by the end-of-text token, and written as uint16 `train.bin` / `val.bin` (nanoGPT's format) with a
`meta.json`, under `cache_dir/<key>/`. Val is a seeded choice of whole documents.
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

import numpy as np
import pyarrow.parquet as pq
import torch

from trainer.config import DataConfig

FORMAT_VERSION = 1
DATA_NAMES = ("sample", "parquet")
SAMPLE_TEXT_COLUMN = "text"
READ_BATCH_ROWS = 1024


class DataError(ValueError):
    """Bad data input; the message names the bad value and what would be valid."""


@dataclass(frozen=True)
class TokenSplit:
    path: Path
    num_tokens: int

    def sample_batch(self, batch_size: int, block_size: int, generator: torch.Generator):
        """Random windows (x, y = x shifted by one) as int64 CPU tensors."""
        # a fresh memmap per call, as nanoGPT does: a long-lived one leaks memory
        tokens = np.memmap(self.path, dtype=np.uint16, mode="r")
        starts = torch.randint(len(tokens) - block_size, (batch_size,), generator=generator).tolist()
        x = torch.from_numpy(np.stack([tokens[i : i + block_size] for i in starts]).astype(np.int64))
        y = torch.from_numpy(np.stack([tokens[i + 1 : i + 1 + block_size] for i in starts]).astype(np.int64))
        return x, y


@dataclass(frozen=True)
class PreparedData:
    train: TokenSplit
    val: TokenSplit
    meta: dict

    def check_fits(self, block_size: int) -> None:
        for name, split in (("train", self.train), ("val", self.val)):
            if split.num_tokens < block_size + 1:
                raise DataError(
                    f"the {name} split has {split.num_tokens} tokens, fewer than one window of "
                    f"model.block_size={block_size} + 1; use more data or a smaller block_size"
                )


def sample_corpus_path() -> Path:
    return Path(__file__).resolve().parent / "sample_data" / "shakespeare_plays.parquet"


def load_tokenizer(name: str):
    import tiktoken

    try:
        return tiktoken.get_encoding(name)
    except ValueError as e:
        raise DataError(f"data.tokenizer={name!r} is not a tiktoken encoding ({e}); "
                        f"use r50k_base (GPT-2's ids) or gpt2") from None
    except Exception as e:
        raise DataError(
            f"tiktoken could not load the {name!r} encoding ({type(e).__name__}: {e}). It downloads the "
            f"BPE file on first use: allow that download once, or set TIKTOKEN_CACHE_DIR to a folder "
            f"that holds the file (copy it from a machine where tiktoken has run)"
        ) from None


def _resolve(patterns, what: str) -> list[Path]:
    files = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(str(pattern))))
        if not matches:
            raise DataError(f"{what}: no file matches {pattern!r}")
        files.extend(Path(m).resolve() for m in matches)
    return files


def _open_parquet(path: Path, column: str) -> pq.ParquetFile:
    try:
        pf = pq.ParquetFile(path)
    except Exception as e:
        raise DataError(f"{path} is not a readable parquet file ({type(e).__name__}: {e})") from None
    names = pf.schema_arrow.names
    if column not in names:
        raise DataError(f"{path} has no text column {column!r}; its columns are: {', '.join(names)} "
                        f"(set data.text_column)")
    return pf


def _sources(cfg: DataConfig) -> tuple[list[Path], list[Path], str]:
    if cfg.name not in DATA_NAMES:
        raise DataError(f"data.name={cfg.name!r} is invalid; valid: {', '.join(DATA_NAMES)}")
    if cfg.name == "sample":
        return [sample_corpus_path()], [], SAMPLE_TEXT_COLUMN
    if not cfg.files:
        raise DataError("data.files is empty; give parquet paths or globs, e.g. data.files='[/data/*.parquet]'")
    files = _resolve(cfg.files, "data.files")
    val_files = _resolve(cfg.val_files, "data.val_files") if cfg.val_files else []
    return files, val_files, cfg.text_column


def _cache_key(files, val_files, column: str, cfg: DataConfig) -> tuple[str, list]:
    fingerprint = []
    for role, paths in (("train", files), ("val", val_files)):
        for p in paths:
            st = p.stat()
            fingerprint.append({"role": role, "path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    split = {"val_fraction": None if val_files else cfg.val_fraction, "split_seed": None if val_files else cfg.split_seed}
    blob = json.dumps({"v": FORMAT_VERSION, "files": fingerprint, "tokenizer": cfg.tokenizer,
                       "column": column, **split}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16], fingerprint


def _load(final: Path) -> PreparedData:
    meta = json.loads((final / "meta.json").read_text())
    return PreparedData(TokenSplit(final / "train.bin", meta["train_tokens"]),
                        TokenSplit(final / "val.bin", meta["val_tokens"]), meta)


def prepare_data(cfg: DataConfig, progress: bool = True) -> PreparedData:
    """Tokenize the configured source into the cache (once) and return its splits."""
    files, val_files, column = _sources(cfg)
    parquet = {p: _open_parquet(p, column) for p in files + val_files}  # every check before tokenizing
    if not val_files and not 0.0 < cfg.val_fraction < 1.0:
        raise DataError(f"data.val_fraction={cfg.val_fraction} is invalid; it must be in (0, 1), "
                        f"or give data.val_files")
    enc = load_tokenizer(cfg.tokenizer)
    key, fingerprint = _cache_key(files, val_files, column, cfg)
    root = Path(cfg.cache_dir)
    final = root / key
    if (final / "meta.json").is_file():
        return _load(final)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second process waits here, then finds the cache
        if (final / "meta.json").is_file():
            return _load(final)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
        try:
            meta = _tokenize(parquet, files, val_files, column, cfg, enc, tmp, progress)
            meta.update(key=key, tokenizer=cfg.tokenizer, eot_token=enc.eot_token, sources=fingerprint,
                        text_column=column, created=time.strftime("%Y-%m-%dT%H:%M:%S"))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
            os.rename(tmp, final)  # the cache appears whole or not at all
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    data = _load(final)
    print(f"data: {data.meta['train_tokens']:,} train / {data.meta['val_tokens']:,} val tokens from "
          f"{data.meta['train_documents']:,} / {data.meta['val_documents']:,} documents "
          f"({data.meta['skipped_documents']} empty skipped) -> {final}", file=sys.stderr)
    return data


def _tokenize(parquet, files, val_files, column, cfg, enc, out: Path, progress: bool) -> dict:
    from tqdm import tqdm

    if val_files:
        val_docs = None
    else:
        n_docs = sum(parquet[p].metadata.num_rows for p in files)
        n_val = min(n_docs - 1, max(1, round(cfg.val_fraction * n_docs)))
        if n_docs < 2:
            raise DataError(f"data.files hold {n_docs} document(s); a val split needs at least 2, "
                            f"or give data.val_files")
        rng = np.random.default_rng(cfg.split_seed)
        val_docs = np.zeros(n_docs, dtype=bool)
        val_docs[rng.choice(n_docs, size=n_val, replace=False)] = True
    counts = {"train_tokens": 0, "val_tokens": 0, "train_documents": 0, "val_documents": 0, "skipped_documents": 0}
    bar = tqdm(unit="tok", unit_scale=True, disable=not progress, file=sys.stderr, desc="tokenizing")
    with open(out / "train.bin", "wb") as train_f, open(out / "val.bin", "wb") as val_f:
        doc_index = 0
        for path in files + val_files:
            is_val_file = path in val_files and path not in files
            for batch in parquet[path].iter_batches(batch_size=READ_BATCH_ROWS, columns=[column]):
                texts = batch.column(0).to_pylist()
                kept, to_val = [], []
                for text in texts:
                    if is_val_file:
                        goes_val = True
                    else:
                        goes_val = val_docs is not None and bool(val_docs[doc_index])
                        doc_index += 1
                    if not text:
                        counts["skipped_documents"] += 1
                        continue
                    kept.append(text)
                    to_val.append(goes_val)
                parts = {"train": [], "val": []}
                for ids, goes_val in zip(enc.encode_ordinary_batch(kept), to_val):
                    ids.append(enc.eot_token)
                    parts["val" if goes_val else "train"].append(ids)
                for split, f in (("train", train_f), ("val", val_f)):
                    if parts[split]:
                        arr = np.fromiter(itertools.chain.from_iterable(parts[split]), dtype=np.uint16)
                        f.write(arr.tobytes())
                        counts[f"{split}_tokens"] += len(arr)
                        counts[f"{split}_documents"] += len(parts[split])
                        bar.update(len(arr))
    bar.close()
    if counts["train_tokens"] == 0 or counts["val_tokens"] == 0:
        raise DataError(f"after skipping {counts['skipped_documents']} empty texts the data has "
                        f"{counts['train_tokens']} train and {counts['val_tokens']} val tokens; both must be > 0")
    return counts
