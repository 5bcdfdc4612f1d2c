"""torchrun: DistributedDataParallel on CPU with 2 gloo processes trains the curve one process
trains at the same tokens per iteration; resume works under it; a bad accumulation is one error;
a study's `mode=best` long run runs and resumes under it, written by rank 0 alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sweeps.compose import compose_study_config
from sweeps.runner import run
from tests.test_train import tiny_config
from trainer import as_train_config, checkpoint_config, train
from trainer.distributed import Ranks

ROOT = Path(__file__).resolve().parents[1]
# tiny_config's run (tests/test_train.py) at 2 x 4 micro-batches an iteration, as Hydra overrides
SETTINGS = {"batch_size": 2, "gradient_accumulation_steps": 4, "log_interval": 10}
RUN = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "model.dropout=0.0",
       "data.val_fraction=0.1", "schedule.lr=3e-3", "schedule.min_lr=3e-4", "schedule.max_iters=40",
       "schedule.warmup_iters=5", "eval_interval=10", "eval_iters=4", "checkpoint=last",
       *(f"{k}={v}" for k, v in SETTINGS.items())]


# a study of one tiny trial (its baseline) at 2 x 2 micro-batches an iteration, and its long run
STUDY = ["+sweep=lr_warmup", "model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.block_size=32",
         "batch_size=2", "gradient_accumulation_steps=2", "eval_iters=2", "schedule.max_iters=10",
         "eval_interval=5", "log_interval=5", "study.n_trials=1"]
LONG_RUN = ["mode=best", "schedule.max_iters=20", "eval_interval=5"]


def torchrun(args: list[str], cwd: Path, nproc: int = 2, program: tuple = ("-m", "trainer"),
             run_in: Path = ROOT) -> subprocess.CompletedProcess:
    """`program args` under torchrun, from `run_in`, with Hydra's own dir in `cwd`."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                           *program, *args, f"hydra.run.dir={cwd / 'hydra'}"],
                          cwd=run_in, env=env, capture_output=True, text=True, timeout=600)


def val_losses(run_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["iter"]: r["val_loss"] for r in rows if r["type"] == "eval"}


def test_each_rank_takes_an_equal_share_of_the_micro_batches():
    assert [list(Ranks(r, r, 2).micro_batches(4)) for r in (0, 1)] == [[0, 1], [2, 3]]
    assert list(Ranks().micro_batches(4)) == [0, 1, 2, 3]


def test_a_later_ranks_own_run_dir_goes_only_when_it_holds_nothing_but_hydras_files(tmp_path):
    from trainer.__main__ import drop_rank_dir

    run_dir = tmp_path / "runs" / "12-00-00"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "ckpt.pt").write_bytes(b"x")

    def rank_dir(name: str, log: str = "", extra: str | None = None) -> Path:
        d = tmp_path / "runs" / name
        (d / ".hydra").mkdir(parents=True)
        (d / ".hydra" / "config.yaml").write_text("out_dir: ...\n")
        (d / "__main__.log").write_text(log)
        if extra:
            (d / extra).write_text("kept")
        return d

    assert drop_rank_dir(rank_dir("12-00-01"), run_dir) and not (tmp_path / "runs" / "12-00-01").exists()
    assert not drop_rank_dir(run_dir, run_dir) and (run_dir / "ckpt.pt").is_file()  # the run's own dir stays
    for name, log, extra in (("logged", "a line", None), ("user_file", "", "notes.txt")):
        d = rank_dir(name, log, extra)
        assert not drop_rank_dir(d, run_dir) and d.is_dir()  # anything but Hydra's files: kept


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

    # resume under torchrun: a single process trains to iteration 20, two ranks go on from its checkpoint.
    # Each rank resolves out_dir itself (as `${now:...}` can differ by a second); the run's is rank 0's.
    cut = tmp_path / "cut0"
    cfg.out_dir = str(cut)
    train(cfg, on_eval=lambda m: "stop" if m.iter == 20 else None)
    resumed = torchrun([*RUN, cache, f"out_dir={tmp_path}/cut${{oc.env:RANK}}", "init_from=resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
    assert not (tmp_path / "cut1").exists()
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


@pytest.fixture
def one_thread():
    """One torch thread in this process too, as each rank has (the tiny runs gain nothing from two)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_mode_best_under_torchrun_is_one_run_written_by_rank_0_and_resumes(workdir, one_thread):
    cwd, common = workdir
    study = [*STUDY, f"study.storage=sqlite:///{cwd / 'study.db'}", *common]
    run(compose_study_config(study), study)  # the study: its baseline trial, in this process
    best_run = cwd / "outputs" / "studies" / "lr_warmup" / "best_run"

    def long_run() -> subprocess.CompletedProcess:
        done = torchrun([*study, *LONG_RUN], cwd, program=(str(ROOT / "study_runner.py"),), run_in=cwd)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        assert done.stdout.count("best trial 0 ") == done.stdout.count("completed: best val loss") == 1  # rank 0 speaks
        return done

    first = long_run()
    assert "(scratch)" in first.stdout
    # one long run: rank 0's checkpoint and metrics in best_run, nothing else written beside the trial's
    assert sorted(p.name for p in best_run.iterdir()) == ["ckpt.pt", "metrics.jsonl"]
    assert (best_run.parent / "best_config.yaml").is_file()
    assert sorted(p.parent.name for p in (cwd / "outputs").rglob("ckpt.pt")) == ["best_run", "trial_0000"]
    assert sorted(p.parent.name for p in (cwd / "outputs").rglob("metrics.jsonl")) == ["best_run", "trial_0000"]
    rows = [json.loads(line) for line in (best_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["iter"] for r in rows if r["type"] == "eval"] == [0, 5, 10, 15, 20]  # each once: one writer
    complete = val_losses(best_run)
    ckpt = torch.load(best_run / "ckpt.pt", map_location="cpu", weights_only=False)
    assert ckpt["iter_num"] == 20 and ckpt["best_val_loss"] == min(complete.values())
    printed = float(first.stdout.rsplit("completed: best val loss ", 1)[1].split()[0])
    assert printed == pytest.approx(min(complete.values()), abs=1e-4)

    # an interrupted long run: its first 10 iterations, by one process, with the settings it was started with
    cfg = as_train_config(checkpoint_config(best_run / "ckpt.pt"))
    shutil.rmtree(best_run)
    cfg.out_dir = str(best_run)
    train(cfg, on_eval=lambda m: "stop" if m.iter == 10 else None, log=lambda line: None)
    # the same command again goes on from its checkpoint, under torchrun, to the same curve
    resumed = long_run()
    assert "(resume)" in resumed.stdout and "resuming at iteration 10" in resumed.stdout
    got = val_losses(best_run)
    assert sorted(got) == [0, 5, 10, 15, 20]
    assert all(abs(got[i] - complete[i]) <= 1e-5 * abs(complete[i]) for i in complete), (got, complete)
    assert torch.load(best_run / "ckpt.pt", map_location="cpu", weights_only=False)["iter_num"] == 20
