"""torchrun: DistributedDataParallel on CPU with 2 gloo processes trains the curve one process
trains at the same tokens per iteration; resume works under it; a bad accumulation is one error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_train import tiny_config
from trainer import train
from trainer.distributed import Ranks

ROOT = Path(__file__).resolve().parents[1]
# tiny_config's run (tests/test_train.py) at 2 x 4 micro-batches an iteration, as Hydra overrides
SETTINGS = {"batch_size": 2, "gradient_accumulation_steps": 4, "log_interval": 10}
RUN = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "model.dropout=0.0",
       "data.val_fraction=0.1", "schedule.lr=3e-3", "schedule.min_lr=3e-4", "schedule.max_iters=40",
       "schedule.warmup_iters=5", "eval_interval=10", "eval_iters=4", "checkpoint=last",
       *(f"{k}={v}" for k, v in SETTINGS.items())]


def torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           "-m", "trainer", *args, f"hydra.run.dir={cwd / 'hydra'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def val_losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["iter"]: r["val_loss"] for r in rows if r["type"] == "eval"}


def test_each_rank_takes_an_equal_share_of_the_micro_batches():
    assert [list(Ranks(r, r, 2).micro_batches(4)) for r in (0, 1)] == [[0, 1], [2, 3]]
    assert list(Ranks().micro_batches(4)) == [0, 1, 2, 3]


@pytest.mark.slow
def test_two_gloo_processes_train_the_single_process_curve_and_resume(tmp_path):
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    single = tmp_path / "single"
    cfg = tiny_config(tmp_path / "s", **SETTINGS)
    cfg.out_dir, cfg.data.cache_dir = str(single), str(tmp_path / "cache")
    train(cfg)
    ddp = torchrun([*RUN, cache, f"out_dir={tmp_path / 'ddp'}"], tmp_path)
    assert ddp.returncode == 0, ddp.stdout[-2000:] + ddp.stderr[-2000:]
    assert ddp.stdout.count("completed: best val loss") == 1  # rank 0 alone speaks
    expected, got = val_losses(single), val_losses(tmp_path / "ddp")
    assert sorted(got) == sorted(expected) == [0, 10, 20, 30, 40]
    assert all(abs(got[i] - expected[i]) <= 1e-5 * abs(expected[i]) for i in expected), (got, expected)

    # resume under torchrun: a single process trains to iteration 20, two ranks go on from its checkpoint
    cut = tmp_path / "cut"
    cfg.out_dir = str(cut)
    train(cfg, on_eval=lambda m: "stop" if m.iter == 20 else None)
    resumed = torchrun([*RUN, cache, f"out_dir={cut}", "init_from=resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    got = val_losses(cut)
    assert sorted(got) == [0, 10, 20, 30, 40]
    assert all(abs(got[i] - expected[i]) <= 1e-5 * abs(expected[i]) for i in expected), (got, expected)


@pytest.mark.slow
def test_an_accumulation_the_ranks_cannot_share_is_one_error(tmp_path):
    done = torchrun([*(a for a in RUN if not a.startswith("gradient_accumulation_steps")),
                     "gradient_accumulation_steps=3", f"data.cache_dir={tmp_path / 'cache'}",
                     f"out_dir={tmp_path / 'run'}"], tmp_path)
    assert done.returncode != 0
    assert "gradient_accumulation_steps=3 is invalid under torchrun with 2 processes: must be a multiple of 2" \
        in done.stdout + done.stderr
