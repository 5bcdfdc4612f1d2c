"""Data preparation: throughput against tiktoken alone, and peak memory on a large parquet.

    python bench/data_prep.py --json OUT               # every part, a >= 1 GB generated parquet
    python bench/data_prep.py --gb 0.05 --text-mb 5 --verify-gb 0.1   # a quick check
    python bench/data_prep.py --skip-throughput --skip-memory          # (c) only

(a) tokens/s of `prepare_data` (parquet in, val split, uint16 files out, cache) against tiktoken's
own `encode_ordinary_batch` on the same texts, already in memory, with the same thread count; the
two alternate, best of --rounds, and the ratio is printed (target >= 0.8x).
(b) peak RSS of a child process that runs `prepare_data` on a generated parquet of at least --gb
GB on disk (target < 1 GB, and it must not grow with the file). The documents are random runs of
lines from the sample plays, so no two are alike; the file is written uncompressed by default, so
its size on disk is about its text size (--compression zstd gives a smaller file of the same text).
(c) what checking a reused cache costs (`prepare_data` finding its cache): a cache of at least
--verify-gb GB of real tokens (the throughput part's, repeated) is reused with the default checks
(below FULL_CHECK_MAX_BYTES: SHA-256 and the token checks) and with the token checks only, with the
file in the page cache (warm) and evicted from it first (cold, posix_fadvise DONTNEED), against
tokenizing the same tokens and against bare SHA-256 / BLAKE2b / CRC-32 passes over the file.
Files go under --workdir (default outputs/bench); the generated parquet is kept for reruns.
--json OUT saves the numbers of every part run, with the command, the date and the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(REPO.parent / "shared" / "tiktoken_cache"))

import trainer.data as data_mod  # noqa: E402
from trainer.config import DataConfig  # noqa: E402
from trainer.data import load_tokenizer, prepare_data, sample_corpus_path  # noqa: E402
from bench.provenance import provenance  # noqa: E402


def sample_lines() -> list[str]:
    texts = pq.read_table(sample_corpus_path(), columns=["text"]).column(0).to_pylist()
    return [line for t in texts for line in t.splitlines()]


def write_parquet(path: Path, target_bytes: int, compression: str, seed: int = 0, rows_per_group: int = 4096,
                  of_text: bool = False) -> tuple[int, int]:
    """Documents of 20..400 consecutive lines from a random place in the plays, until the file (or,
    with `of_text`, its text) holds `target_bytes`; returns (rows, text bytes)."""
    lines = sample_lines()
    rng = np.random.default_rng(seed)
    rows = text_bytes = 0
    tmp = path.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, pa.schema([("id", pa.int64()), ("text", pa.string())]),
                          compression=compression) as writer:
        while (text_bytes if of_text else tmp.stat().st_size) < target_bytes:
            starts = rng.integers(0, len(lines) - 400, rows_per_group)
            lengths = rng.integers(20, 400, rows_per_group)
            docs = ["\n".join(lines[s : s + n]) for s, n in zip(starts.tolist(), lengths.tolist())]
            writer.write_table(pa.table({"id": pa.array(range(rows, rows + len(docs)), pa.int64()),
                                         "text": docs}))
            rows += len(docs)
            text_bytes += sum(len(d) for d in docs)
    tmp.rename(path)
    return rows, text_bytes


def throughput(workdir: Path, text_mb: float, rounds: int) -> dict:
    path = workdir / f"throughput_{text_mb:g}mb.parquet"
    if not path.exists():
        write_parquet(path, int(text_mb * 1e6), "zstd", seed=1, rows_per_group=512, of_text=True)
    texts = pq.read_table(path, columns=["text"]).column(0).to_pylist()
    enc = load_tokenizer("r50k_base")
    threads = max(1, min(8, os.cpu_count() or 1))  # what prepare_data uses
    ours, theirs = [], []
    for r in range(rounds):
        t0 = time.perf_counter()
        n_tiktoken = sum(len(ids) + 1 for ids in enc.encode_ordinary_batch(texts, num_threads=threads))
        theirs.append(n_tiktoken / (time.perf_counter() - t0))
        cache = workdir / f"cache_throughput_{r}"
        shutil.rmtree(cache, ignore_errors=True)
        t0 = time.perf_counter()
        data = prepare_data(DataConfig(name="parquet", files=[str(path)], val_fraction=0.01, cache_dir=str(cache)),
                            progress=False)
        n_ours = data.meta["train_tokens"] + data.meta["val_tokens"]
        ours.append(n_ours / (time.perf_counter() - t0))
        shutil.rmtree(cache)
        assert n_ours == n_tiktoken, (n_ours, n_tiktoken)
        print(f"  round {r + 1}: tiktoken {theirs[-1]:,.0f} tok/s, prepare_data {ours[-1]:,.0f} tok/s", flush=True)
    mb = sum(len(t) for t in texts) / 1e6
    print(f"(a) throughput on {mb:.0f} MB of text, {len(texts):,} documents, {n_ours:,} tokens, "
          f"{threads} threads, best of {rounds}:")
    print(f"    tiktoken encode_ordinary_batch, texts in memory: {max(theirs):>12,.0f} tokens/s")
    print(f"    prepare_data, parquet -> uint16 files:          {max(ours):>12,.0f} tokens/s")
    print(f"    ratio prepare_data / tiktoken: {max(ours) / max(theirs):.2f}x (target >= 0.8x)", flush=True)
    return {"text_mb": mb, "documents": len(texts), "tokens": n_ours, "threads": threads, "rounds": rounds,
            "tiktoken_tokens_per_s_by_round": theirs, "prepare_data_tokens_per_s_by_round": ours,
            "tiktoken_tokens_per_s": max(theirs), "prepare_data_tokens_per_s": max(ours),
            "ratio_prepare_data_over_tiktoken": max(ours) / max(theirs)}


CHILD = """
import json, resource, sys, time
sys.path.insert(0, {repo!r})
from trainer.config import DataConfig
from trainer.data import prepare_data
t0 = time.perf_counter()
d = prepare_data(DataConfig(name="parquet", files=[{path!r}], val_fraction=0.001, cache_dir={cache!r}), progress=True)
print(json.dumps({{"seconds": time.perf_counter() - t0, "tokens": d.meta["train_tokens"] + d.meta["val_tokens"],
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}}))
"""


# A fresh, small launcher runs the measured child: on Linux a child's ru_maxrss starts from the
# high-water mark of the process that forked it, so forking from this (large) process would count
# this process's memory instead of the child's.
LAUNCHER = """
import json, resource, subprocess, sys
out = subprocess.run([sys.executable, "-c", sys.argv[1]], check=True, stdout=subprocess.PIPE, text=True).stdout
print(json.dumps({"maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "stdout": out}))
"""


def run_measured(code: str) -> tuple[int, str]:
    """(peak RSS in KB, stdout) of a Python child running `code`."""
    res = subprocess.run([sys.executable, "-c", LAUNCHER, code], check=True, stdout=subprocess.PIPE, text=True)
    report = json.loads(res.stdout)
    return report["maxrss_kb"], report["stdout"]


def peak_memory(workdir: Path, gigabytes: float, compression: str) -> dict:
    path = workdir / f"large_{gigabytes:g}gb_{compression}.parquet"
    if not path.exists():
        t0 = time.perf_counter()
        rows, text_bytes = write_parquet(path, int(gigabytes * 1e9), compression)
        print(f"generated {path}: {rows:,} documents, {text_bytes / 1e9:.2f} GB of text in "
              f"{time.perf_counter() - t0:.0f}s", flush=True)
    md = pq.ParquetFile(path).metadata
    print(f"(b) {path.name}: {path.stat().st_size / 1e9:.2f} GB on disk ({compression}), {md.num_rows:,} "
          f"documents in {md.num_row_groups} row groups", flush=True)
    # the baseline: a child that only imports the modules (torch, pyarrow, tiktoken)
    base_kb, _ = run_measured(f"import sys; sys.path.insert(0, {str(REPO)!r}); import trainer.data")
    cache = workdir / "cache_large"
    shutil.rmtree(cache, ignore_errors=True)
    peak_kb, out = run_measured(CHILD.format(repo=str(REPO), path=str(path), cache=str(cache)))
    child = json.loads(out.strip().splitlines()[-1])
    peak_mb, base_mb = peak_kb / 1024, base_kb / 1024
    shutil.rmtree(cache, ignore_errors=True)
    print(f"    prepare_data: {child['tokens']:,} tokens in {child['seconds']:.0f}s "
          f"({child['tokens'] / child['seconds']:,.0f} tokens/s)")
    print(f"    peak RSS of the child (RUSAGE_CHILDREN): {peak_mb:,.0f} MB (target < 1,024 MB); "
          f"a child that only imports trainer.data: {base_mb:,.0f} MB; the child's own "
          f"RUSAGE_SELF: {child['maxrss_kb'] / 1024:,.0f} MB", flush=True)
    return {"parquet_gb_on_disk": path.stat().st_size / 1e9, "compression": compression, "documents": md.num_rows,
            "tokens": child["tokens"], "seconds": child["seconds"], "peak_rss_mb": peak_mb,
            "import_only_rss_mb": base_mb, "child_self_rss_mb": child["maxrss_kb"] / 1024}


def evict(*paths: Path) -> None:
    """Drop the files' pages from the page cache, so the next read comes from the disk."""
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def stream(path: Path, update) -> None:
    buf = bytearray(data_mod.SCAN_CHUNK_BYTES)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(view):
            update(view[:n])


def bare_pass(path: Path, name: str) -> None:
    if name == "crc32":
        import zlib

        crc = [0]
        stream(path, lambda b: crc.__setitem__(0, zlib.crc32(b, crc[0])))
    else:
        h = hashlib.new(name)
        stream(path, h.update)


def verify_costs(workdir: Path, gigabytes: float, text_mb: float, rounds: int) -> dict:
    src = workdir / f"throughput_{text_mb:g}mb.parquet"  # the same documents as (a)
    if not src.exists():
        write_parquet(src, int(text_mb * 1e6), "zstd", seed=1, rows_per_group=512, of_text=True)
    small_root, root = workdir / "cache_verify_small", workdir / "cache_verify"
    shutil.rmtree(small_root, ignore_errors=True)
    cfg = lambda r: DataConfig(name="parquet", files=[str(src)], val_fraction=0.01, cache_dir=str(r))
    tokenize_s = []
    for r in range(rounds):
        shutil.rmtree(small_root, ignore_errors=True)
        t0 = time.perf_counter()
        small = prepare_data(cfg(small_root), progress=False)
        tokenize_s.append(time.perf_counter() - t0)
    small_tokens = small.meta["train_tokens"] + small.meta["val_tokens"]
    tok_per_s = small_tokens / min(tokenize_s)
    # the large cache: the small one's train tokens repeated, with the meta.json prepare_data would write
    piece = small.train.path.read_bytes()
    reps = max(1, math.ceil(gigabytes * 1e9 / len(piece)))
    shutil.rmtree(root, ignore_errors=True)
    shutil.copytree(small_root, root)
    final = root / small.train.path.parent.name
    h = hashlib.new(data_mod.CHECKSUM)
    with open(final / "train.bin", "wb") as f:
        for _ in range(reps):
            f.write(piece)
            h.update(piece)
    meta = dict(small.meta)
    meta.update(train_tokens=small.meta["train_tokens"] * reps, train_documents=small.meta["train_documents"] * reps)
    meta[f"train_{data_mod.CHECKSUM}"] = h.hexdigest()
    (final / "meta.json").write_text(json.dumps(meta, indent=1))
    bins = (final / "train.bin", final / "val.bin")
    gb = sum(p.stat().st_size for p in bins) / 1e9
    tokenize_s_per_gb = 1e9 / 2 / tok_per_s  # uint16: 5e8 tokens per GB
    print(f"(c) checking a reused cache of {gb:.2f} GB ({meta['train_tokens'] + meta['val_tokens']:,} tokens, "
          f"{reps} copies of (a)'s train tokens), best of {rounds}, s per GB of tokens:", flush=True)
    print(f"    tokenizing (prepare_data, parquet -> uint16 files): {tokenize_s_per_gb:8.1f} s/GB "
          f"({tok_per_s:,.0f} tokens/s on {small_tokens:,} tokens)")
    results = {"cpus": os.cpu_count(), "cache_gb": gb, "tokenize_tokens_per_s": tok_per_s,
               "tokenize_s_per_gb": tokenize_s_per_gb, "rounds": rounds}

    def reuse(limit: int, cold: bool) -> float:
        times = []
        for _ in range(rounds):
            data_mod._verified.clear()  # as a new process: nothing checked yet
            if cold:
                evict(*bins)
            saved, data_mod.FULL_CHECK_MAX_BYTES = data_mod.FULL_CHECK_MAX_BYTES, limit
            try:
                t0 = time.perf_counter()
                data = prepare_data(cfg(root), progress=False)
                times.append(time.perf_counter() - t0)
            finally:
                data_mod.FULL_CHECK_MAX_BYTES = saved
            assert data.meta["train_tokens"] == meta["train_tokens"]
        return min(times) / gb

    default = data_mod.FULL_CHECK_MAX_BYTES
    checks = "sha256 + tokens" if gb * 1e9 <= default else "tokens only"
    for label, limit in ((f"default ({checks}; checksum up to {default / 2**30:g} GiB)", default),
                         ("tokens only", 0)):
        for cold in (False, True):
            s_per_gb = reuse(limit, cold)
            name = f"reuse, {label}, {'cold' if cold else 'warm'}"
            results[name] = s_per_gb
            print(f"    {name + ':':<62} {s_per_gb:8.3f} s/GB ({s_per_gb / tokenize_s_per_gb:.2%} of tokenizing)",
                  flush=True)
    for algo in ("sha256", "blake2b", "crc32"):
        times = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            bare_pass(bins[0], algo)
            times.append(time.perf_counter() - t0)
        s_per_gb = min(times) / (bins[0].stat().st_size / 1e9)
        results[f"bare {algo}, warm"] = s_per_gb
        print(f"    {'bare ' + algo + ' over train.bin, warm:':<62} {s_per_gb:8.3f} s/GB", flush=True)
    shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(small_root, ignore_errors=True)
    return results


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gb", type=float, default=1.0, help="size on disk of the large parquet, in GB (default 1)")
    ap.add_argument("--compression", default="none", help="of the large parquet: none | snappy | zstd")
    ap.add_argument("--text-mb", type=float, default=30.0, help="text for the throughput part, in MB")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workdir", default="outputs/bench", help="generated files and caches (default %(default)s)")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--verify-gb", type=float, default=1.0, help="size of the cache checked in (c), in GB")
    ap.add_argument("--skip-verify", action="store_true")
    ap.add_argument("--json", help="write the numbers of the parts run, the command and the machine, to this file")
    args = ap.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    made = provenance("bench/data_prep.py", argv)
    print(f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}, pyarrow {pa.__version__}", flush=True)
    results = {}
    if not args.skip_throughput:
        results["throughput"] = throughput(workdir, args.text_mb, args.rounds)
    if not args.skip_memory:
        results["memory"] = peak_memory(workdir, args.gb, args.compression)
    if not args.skip_verify:
        results["verify_s_per_gb"] = verify_costs(workdir, args.verify_gb, args.text_mb, args.rounds)
    if args.json:  # a temp file renamed into place: an interrupted run leaves the old file whole
        out = Path(args.json)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps({**made, "pyarrow": pa.__version__, **results}, indent=1) + "\n")
        tmp.replace(out)


if __name__ == "__main__":
    main()
