"""A trial that runs out of memory is trained again at half the micro-batch, for real: the worker
runs under an address-space limit (RLIMIT_AS) that a micro-batch of 256 sequences exceeds and one
of 128 fits, so PyTorch's own allocator fails as it would on a full GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeps.trial_record import CONFIG, FAIL_REASON, OUT_OF_MEMORY
from trainer import halved_micro_batch, is_out_of_memory
from trainer.config import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
# Logits are batch x 64 x 50304 floats, 1.6 GB at 128 sequences. Measured on this config (VmPeak
# over the run's start; glibc's heap makes it uneven below 128), a run's address space grows by
# 3.1 GB at 32 sequences, 5.9 GB at 64 and at 128, and 10.7 GB at 256: an 8.3 GB limit fails 256
# and fits 128, 2.4 GB from either.
LIMITED_WORKER = """
import resource, sys
import torch
from sweeps.compose import compose_study_config
from sweeps.runner import run
overrides = sys.argv[2:]
cfg = compose_study_config(overrides)
torch.ones(64, 64) @ torch.ones(64, 64)  # start torch's threads before measuring
vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
limit = vm + int(float(sys.argv[1]) * 2**30)
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
run(cfg, overrides)
"""


def limited_sweep(cwd: Path, gb: float, overrides: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MALLOC_ARENA_MAX="2", OMP_NUM_THREADS="2")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(LIMITED_WORKER), str(gb), *overrides],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def overrides(url: str, common: list[str], batch: int, name: str) -> list[str]:
    return ["+sweep=lr_warmup", f"study.storage={url}", f"study.name={name}", "study.n_trials=1",
            "model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.block_size=64",
            f"batch_size={batch}", "gradient_accumulation_steps=1", "schedule.max_iters=1", "eval_interval=1",
            "eval_iters=1", "log_interval=1", *common]


@pytest.mark.slow
def test_a_trial_out_of_memory_runs_again_at_half_the_micro_batch(workdir):
    cwd, common = workdir
    url = f"sqlite:///{cwd / 'oom.db'}"
    done = limited_sweep(cwd, 8.3, overrides(url, common, 256, "halved"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [trial] = optuna.load_study(study_name="halved", storage=url).get_trials()
    assert trial.state == TrialState.COMPLETE, trial.user_attrs
    assert "can't allocate memory" in trial.user_attrs[OUT_OF_MEMORY]
    trained = json.loads(trial.user_attrs[CONFIG])
    assert (trained["batch_size"], trained["gradient_accumulation_steps"]) == (128, 2)  # 256 sequences a step
    assert "out of memory at batch_size=256" in done.stdout and "again at batch_size=128" in done.stdout
    assert sorted(trial.intermediate_values) == [0, 256 * 64]  # tokens, as the full batch would report
    evals = [json.loads(line) for line in (cwd / "outputs" / "studies" / "halved" / "trial_0000" / "metrics.jsonl")
             .read_text().splitlines() if '"eval"' in line]
    assert [e["iter"] for e in evals] == [0, 1]  # one curve: the failed attempt's lines are gone


@pytest.mark.slow
def test_out_of_memory_again_fails_the_trial_with_the_reason(workdir):
    cwd, common = workdir
    url = f"sqlite:///{cwd / 'oom.db'}"
    done = limited_sweep(cwd, 0.4, overrides(url, common, 256, "too_big"))  # not even 128 sequences fit
    assert done.returncode == 1 and "5 trials in a row failed (last: out of memory" in done.stderr, done.stderr
    trial = optuna.load_study(study_name="too_big", storage=url).get_trials()[0]
    assert trial.state == TrialState.FAIL, done.stdout[-3000:] + done.stderr[-3000:]
    assert trial.user_attrs[FAIL_REASON].startswith("out of memory: ")
    assert "can't allocate memory" in trial.user_attrs[OUT_OF_MEMORY]  # it did try at half


def test_halving_keeps_the_tokens_per_iteration_or_declines():
    cfg = TrainConfig(batch_size=12, gradient_accumulation_steps=40)
    half = halved_micro_batch(cfg)
    assert (half.batch_size, half.gradient_accumulation_steps) == (6, 80)
    assert (cfg.batch_size, cfg.gradient_accumulation_steps) == (12, 40)  # a copy
    assert halved_micro_batch(TrainConfig(batch_size=5)) is None  # 2 x 2 would train 4 sequences, not 5
    assert halved_micro_batch(TrainConfig(batch_size=1)) is None


def test_what_counts_as_out_of_memory():
    import torch
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    try:
        torch.empty(2**62, dtype=torch.uint8)  # the CPU allocator's own failure
    except RuntimeError as e:
        assert is_out_of_memory(e), e
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
