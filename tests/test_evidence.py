"""Behaviours a user relies on, each driven end to end through the real runner, objective, pruner
and trainer on tiny models, and checked against what an independent run or a hand computation
says, never against a value the test wrote itself."""

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from optuna.trial import TrialState

from sweeps import trial_record
from sweeps.compose import compose_study_config
from sweeps.config import StudyError
from sweeps.runner import run
from tests.heartbeats import heartbeat_of
from tests.postgres import PG_URL, needs_postgres
from tests.configs import TINY
from trainer import as_train_config, checkpoint_config, prepare_data, warmup_iters_of
from trainer.config import ScheduleConfig

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "trainer" / "sample_data" / "shakespeare_plays.parquet"


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path / 'study.db'}"


def trials_of(url: str, name: str) -> list:
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def val_losses(trial) -> list[float]:
    return [trial.intermediate_values[step] for step in sorted(trial.intermediate_values)]


# --------------------------------------------------------------------- a plateaued leader is stopped

def overfitting_data(folder: Path) -> list[str]:
    """A train set of ~3,300 tokens (eight slices of one play) and a val set from another play:
    a 1-layer GPT memorizes the train set within a few epochs, so its val loss falls to a
    minimum and then rises, as an overfitting run's does."""
    texts = pq.read_table(SAMPLE).column("text").to_pylist()
    train, val = folder / "train.parquet", folder / "val.parquet"
    pq.write_table(pa.table({"text": [texts[0][i:i + 1500] for i in range(0, 12000, 1500)]}), train)
    pq.write_table(pa.table({"text": [texts[1][i:i + 1500] for i in range(0, 6000, 1500)]}), val)
    return ["data=parquet", f"data.files=[{train}]", f"data.val_files=[{val}]"]


@pytest.mark.slow
def test_a_plateaued_leader_is_stopped_and_recorded_complete_with_its_best_value(workdir):
    """Five trials of one point (constant LR 3e-3, 100 iterations, evaluated every 10): CPU
    training is deterministic, so every trial draws the same curve, whose val loss bottoms out
    and then rises as the model memorizes its tiny train set. Trials 0-3 have fewer than
    `n_startup_trials` (4) finished peers and run to the end; trial 4 is, at its best, level
    with the peers (it is the same run), past its minimum for its last `patience` evaluations,
    and no peer gains after that step: the plateau pruner stops it, and the objective records
    it COMPLETE with the best val loss it reached, which must be the peers' own best."""
    cwd, common = workdir
    overrides = ["+sweep=lr_warmup", "model.n_layer=1", "model.n_head=2", "model.n_embd=32",
                 "model.block_size=32", "batch_size=4", "eval_iters=4", "schedule=constant",
                 "schedule.lr=0.003", "schedule.warmup_iters=0", "schedule.max_iters=100", "eval_interval=10",
                 "log_interval=50", "checkpoint=none", *overfitting_data(cwd), "study.baseline=false",
                 "study.n_trials=5", f"study.storage={sqlite_url(cwd)}", *common]
    cfg = compose_study_config(overrides)
    from sweeps.pruners import pruner_name_of
    assert pruner_name_of(cfg.study.pruner.name, cfg.study.fidelity) == "plateau"  # the defaults
    assert cfg.study.pruner.n_startup_trials == 4
    cfg.sweep.params = {"schedule.lr": "choice(0.003)"}
    run(cfg, overrides)

    trials = trials_of(cfg.study.storage, "lr_warmup")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 5
    peers, stopped = trials[:4], trials[4]
    full = val_losses(peers[0])
    assert len(full) == 11 and all(val_losses(p) == full for p in peers)  # 0, 10, ..., 100: one curve
    best = min(full)
    assert full.index(best) < len(full) - 4 and full[-1] > best  # it did bottom out and turn up

    assert trial_record.status(stopped) == "stopped"
    assert trial_record.stop_reason(stopped).startswith("plateaued leader at step ")
    seen = val_losses(stopped)
    assert seen == full[:len(seen)] and len(seen) < len(full)  # the same run, ended early
    assert stopped.value == min(seen) == best
    # stopped once its last `patience` (3) evaluations were all above its best: not before
    assert len(seen) >= full.index(best) + 1 + 3
    assert trial_record.tokens_seen(stopped) == (len(seen) - 1) * 10 * 4 * 32


# ------------------------------------------------------------------ the baseline, a point of the space



def runner(args, cwd):
    return subprocess.Popen([sys.executable, str(ROOT / "study_runner.py"), *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def tokenize_once(common: list[str]) -> None:
    """The sample corpus into the shared cache, so that workers started together train at once."""
    prepare_data(as_train_config(compose_study_config(["+sweep=lr_warmup", *TINY, *common])).data)


@pytest.mark.slow
def test_two_workers_run_one_baseline_inside_the_space_with_the_configs_own_values(workdir):
    """`+sweep=lr_warmup` searches lr in [1e-4, 1e-2] (log) and the warmup share in [0, 0.3]. The
    config as given, lr 6e-4 (conf/schedule/cosine.yaml) and warmup 2 of 20 iterations, is the
    point (6e-4, 0.1) of that space: trial 0 trains exactly those values, as a sampled trial, in
    whichever worker asks first, and no other trial is a baseline."""
    cwd, common = workdir
    url = sqlite_url(cwd)
    args = ["+sweep=lr_warmup", *TINY, "schedule.warmup_iters=2", f"study.storage={url}", "study.n_trials=4",
            *common]
    cfg = compose_study_config(args)
    assert (cfg.schedule.lr, cfg.schedule.warmup_iters, cfg.schedule.warmup_fraction) == (6e-4, 2, None)
    tokenize_once(common)
    workers = [runner(args, cwd) for _ in range(2)]
    outs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs

    trials = trials_of(url, "lr_warmup")
    ran = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(ran) == 4
    assert all(trial_record.fail_reason(t).startswith("not run") for t in trials if t.state == TrialState.FAIL)
    baselines = [t for t in trials if trial_record.is_baseline(t)]
    assert [t.number for t in baselines] == [0]
    [base] = baselines
    assert trial_record.baseline(base) == trial_record.BASELINE_IN_SPACE and base.state == TrialState.COMPLETE
    assert base.params == {"schedule.lr": 6e-4, "schedule.warmup_fraction": 0.1}
    trained = json.loads(trial_record.config_json(base))["schedule"]
    assert (trained["lr"], trained["warmup_fraction"], warmup_iters_of(ScheduleConfig(**trained))) == (6e-4, 0.1, 2)
    assert len({tuple(sorted(t.params.items())) for t in ran}) == 4  # the others are draws of their own
    assert "gain over the baseline (trial 0" in outs[0] + outs[1] or "no trial beat the baseline" in outs[0] + outs[1]


# ------------------------------------------------------------------------ mode=best, scaled and refused

def test_the_best_trial_is_rerun_with_its_iteration_counts_scaled_and_as_many_evaluations(workdir):
    """A trial of 20 iterations, warmup 4, decay over 16, evaluated every 6 (20 // 6 = 3 times
    after the start: at 0, 6, 12, 18 and the end), re-run by `mode=best schedule.max_iters=50`:
    x2.5, so warmup round(4 x 2.5) = 10, decay 40, and 3 evaluations again, every
    max(6, 50 // 3) = 16 iterations (0, 16, 32, 48 and the end). Then a better trial appears:
    the same mode=best command would resume the old run under the new best's values, and is
    refused, naming the value that differs."""
    cwd, common = workdir
    shared = [o for o in TINY if not o.startswith("eval_interval=")] + [
        "study.baseline=false", f"study.storage={sqlite_url(cwd)}", *common]
    params = {"schedule.lr": "choice(0.0001, 0.003)", "schedule.warmup_iters": "choice(4)",
              "schedule.lr_decay_iters": "choice(16)"}

    def command(*extra):
        overrides = ["+sweep=lr_warmup", *shared, *extra]
        cfg = compose_study_config(overrides)
        cfg.sweep.params = params
        return cfg, overrides

    def queue(lr):  # the next trial of the study trains this point (a real trial, run by the runner)
        study = optuna.load_study(study_name="lr_warmup", storage=sqlite_url(cwd))
        study.enqueue_trial({"schedule.lr": lr, "schedule.warmup_iters": 4, "schedule.lr_decay_iters": 16})

    optuna.create_study(study_name="lr_warmup", storage=sqlite_url(cwd))
    queue(0.0001)
    run(*command("eval_interval=6", "study.n_trials=1"))
    [first] = trials_of(sqlite_url(cwd), "lr_warmup")
    assert first.state == TrialState.COMPLETE and first.params["schedule.lr"] == 0.0001
    assert len(first.intermediate_values) == 5  # 0, 6, 12, 18, 20

    long_run = ("mode=best", "schedule.max_iters=50")
    result = run(*command(*long_run))
    run_dir = cwd / "outputs" / "studies" / "lr_warmup" / "best_run"
    trained = checkpoint_config(run_dir / "ckpt.pt")
    schedule = trained["schedule"]
    assert (schedule["max_iters"], schedule["warmup_iters"], schedule["lr_decay_iters"]) == (50, 10, 40)
    assert trained["eval_interval"] == 16 and schedule["lr"] == 0.0001
    evaluated = [r["iter"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
                 if "val_loss" in r]
    assert evaluated == [0, 16, 32, 48, 50] and result.status == "completed"

    queue(0.003)
    run(*command("eval_interval=6", "study.n_trials=2"))
    newer = optuna.load_study(study_name="lr_warmup", storage=sqlite_url(cwd)).best_trial
    assert newer.number == 1 and newer.value < first.value  # 3e-3 learns in 20 iterations; 1e-4 hardly
    stamp = (run_dir / "ckpt.pt").stat().st_mtime_ns
    with pytest.raises(StudyError, match=r"other settings \(schedule\.lr=0\.0001, now 0\.003\).*move or delete"):
        run(*command(*long_run))
    assert (run_dir / "ckpt.pt").stat().st_mtime_ns == stamp  # the old run is left as it was


# ------------------------------------------------------------------ two workers on PostgreSQL

@needs_postgres
@pytest.mark.slow
def test_two_workers_on_postgresql_with_heartbeats_finish_the_study_once(workdir):
    """Two runner processes on one new PostgreSQL study, heartbeats every second: together they
    finish exactly `study.n_trials`, each trial once (numbers from the database, run dirs and
    draws their own), one baseline, and every trial that ran recorded heartbeats (so a killed
    worker's trial would be failed and queued again, tests/test_storage.py)."""
    cwd, common = workdir
    name = f"pg_two_workers_{uuid.uuid4().hex[:8]}"
    args = ["+sweep=lr_warmup", *TINY, f"study.storage={PG_URL}", f"study.name={name}", "study.n_trials=4",
            "study.heartbeat_interval=1", "study.grace_period=30", *common]
    tokenize_once(common)
    try:
        workers = [runner(args, cwd) for _ in range(2)]
        outs = [w.communicate(timeout=600)[0] for w in workers]
        assert [w.returncode for w in workers] == [0, 0], outs
        trials = trials_of(PG_URL, name)
        ran = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        assert len(ran) == 4 and [t.number for t in trials] == list(range(len(trials)))
        assert all(t.state == TrialState.FAIL and trial_record.fail_reason(t).startswith("not run")
                   for t in trials if t not in ran)
        assert [t.number for t in trials if trial_record.is_baseline(t)] == [0]
        assert len({tuple(sorted(t.params.items())) for t in ran}) == 4
        assert len({t.user_attrs[trial_record.RUN_DIR] for t in ran}) == 4
        assert all(heartbeat_of(PG_URL, name, t.number) is not None for t in ran)
    finally:
        try:
            optuna.delete_study(study_name=name, storage=PG_URL)
        except KeyError:
            pass


# ------------------------------------------------------------------ the motivating user's run

@pytest.mark.slow
def test_the_seed_4070_experiment_composes_and_trains_on_the_sample_data(tmp_path):
    """`experiment=seed_4070` as its user types it, on the embedded sample instead of their
    parquet. Kept: the whole model (gpt_40m: 12 layers, 12 heads, 384 wide, context 1024,
    dropout 0.1, no bias), the schedule (cosine, lr 1e-3 to 1e-4, warmup 500, decay over
    20000) and the optimizer (weight decay 0.1, beta2 0.99). Overridden for a CPU test: the
    device and float32 (float16 and compile are for its GPU), batch 1 without accumulation
    (16 x 32 sequences an iteration on the GPU), two iterations, one batch an evaluation."""
    out_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", "experiment=seed_4070", "device=cpu", "dtype=float32", "compile=false",
         "batch_size=1", "gradient_accumulation_steps=1", "schedule.max_iters=2", "eval_interval=2",
         "eval_iters=1", "log_interval=1", f"out_dir={out_dir}", f"data.cache_dir={tmp_path / 'cache'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    trained = checkpoint_config(out_dir / "ckpt.pt")
    assert trained["model"] == {"n_layer": 12, "n_head": 12, "n_embd": 384, "block_size": 1024, "bias": False,
                                "dropout": 0.1, "vocab_size": 50304}
    assert {k: trained["schedule"][k] for k in ("name", "lr", "min_lr", "warmup_iters", "lr_decay_iters")} == \
        {"name": "cosine", "lr": 1e-3, "min_lr": 1e-4, "warmup_iters": 500, "lr_decay_iters": 20000}
    assert (trained["optim"]["weight_decay"], trained["optim"]["beta2"]) == (0.1, 0.99)
    # parameters by hand: token and position embeddings, then per layer four 384x384 attention
    # matrices, two 384x1536 MLP matrices and two LayerNorm weights, and the final LayerNorm
    # (the head shares the token embedding's weights)
    d, layers = 384, 12
    total = 50304 * d + 1024 * d + layers * (4 * d * d + 2 * 4 * d * d + 2 * d) + d
    assert f"parameters: {total / 1e6:.2f}M total, {(total - 1024 * d) / 1e6:.2f}M without position" in proc.stdout
    assert "iter 1: loss" in proc.stdout and "completed: best val loss" in proc.stdout


# ------------------------------------------------------------------ the default-study benchmark

def test_the_default_study_bench_records_the_command_the_machine_and_what_the_study_found(tmp_path):
    """Two tiny trials, too few to prune (the plateau pruner waits for four finished peers): the
    file must hold 2 x 20 iterations x 128 tokens used, none saved, the baseline as trial 0, and
    the best value the runner's own report printed."""
    from bench.default_study import main

    out = tmp_path / "study.json"
    args = ["--workdir", str(tmp_path / "work"), "--cache-dir", str(tmp_path / "cache"), "--json", str(out),
            "--", "+sweep=lr_warmup", *TINY, "study.n_trials=2"]
    assert main(args) == 0
    found = json.loads(out.read_text())
    assert found["command"].startswith("python bench/default_study.py --workdir ")
    assert found["machine"]["cpu_count"] == os.cpu_count() and found["date_utc"].endswith("Z")
    assert found["states"] == {"COMPLETE": 2} and found["trials"] == 2
    assert (found["tokens_used"], found["tokens_saved"]) == (2 * 20 * 4 * 32, 0)
    assert found["baseline"]["number"] == 0 and found["peak_rss_mb"] > 100  # a process that trained
    best = found["best"]
    [row] = [line for line in found["report"] if line.split()[:1] == [str(best["number"])]]
    assert float(row.split()[1]) == pytest.approx(best["value"], abs=5e-5)
    assert found["gain_over_baseline"] == pytest.approx(found["baseline"]["value"] - best["value"])
