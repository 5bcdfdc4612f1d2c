"""sweeps.trial_record: the user attrs a trial records, written and read back as stored studies hold them."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import optuna
import pytest

from sweeps import trial_record as record

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_keys_are_the_ones_stored_studies_hold():
    # Studies recorded so far and bench/results/*.json use these strings: they must not change.
    assert record.USER_ATTRS == (
        "warmup_step", "budget_step", "lr_area_budget", "run_dir", "config", "worker",
        "val_loss_se", "lr_area", "val_batch_losses", "val_batches",
        "rung_val_loss", "stable_val_loss", "cooldown_tokens", "rung_steps",
        "status", "stop_reason", "num_params", "num_params_non_embedding", "tokens_seen", "epochs",
        "ms_per_iter", "train_val_gap", "best_iter", "wall_time_s", "checkpoint",
        "baseline", "retry_of", "fail_reason", "out_of_memory", "resumed_from", "continues", "paused_at_rung", "curve",
    )
    assert (record.BASELINE_IN_SPACE, record.BASELINE_AS_GIVEN) == (
        "in the search space", "outside the search space")


def test_rung_recorder_keeps_rungs_and_stable_curve_apart():
    study = optuna.create_study()
    trial = study.ask()
    record.set_rung_steps(trial, [1280, 3840])
    rungs = record.RungRecorder(trial)
    rungs.stable(0, 10.9)
    rungs.stable(1024, 7.5)
    rungs.rung(1280, 7.1, cooldown_tokens=256)
    rungs.stable(3072, 6.8)
    rungs.rung(3840, 6.5, cooldown_tokens=768)
    back = stored(trial)
    assert record.rung_val_loss(back) == {1280: 7.1, 3840: 6.5}
    assert record.stable_val_loss(back) == {0: 10.9, 1024: 7.5, 3072: 6.8}
    assert record.cooldown_tokens(back) == 1024 and record.rung_steps(back) == [1280, 3840]
    bare = optuna.trial.create_trial(value=1.0)
    assert record.rung_val_loss(bare) == {} and record.cooldown_tokens(bare) == 0


def stored(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    """The trial as a JSON storage gives it back (RDB user attrs are JSON text)."""
    [frozen] = [t for t in trial.study.get_trials() if t.number == trial.number]
    attrs = json.loads(json.dumps(frozen.user_attrs))
    return optuna.trial.create_trial(value=1.0, user_attrs=attrs,
                                     intermediate_values=frozen.intermediate_values)


def test_written_as_before_and_read_back_typed():
    study = optuna.create_study()
    trial = study.ask()
    record.set_baseline(trial, record.BASELINE_IN_SPACE)
    record.set_plan(trial, warmup_step=512, budget_step=5120, lr_area_budget=3.5)
    record.set_run(trial, run_dir="outputs/t0", config='{"schedule": {"max_iters": 20}}')
    evals = record.EvalRecorder(trial)
    for step, se, area, losses in [(0, 0.1, 0.0, [10.9, 10.7]), (256, 0.05, 0.25, [7.1, 6.9])]:
        evals.record(step, val_loss_se=se, lr_area=area, batch_losses=losses, val_batches="b-1")
        trial.report(sum(losses) / 2, step)
    record.record_outcome(trial, status="completed", stop_reason="completed its budget",
                          num_params=100, num_params_non_embedding=60, tokens_seen=5120,
                          epochs=0.123456, ms_per_iter=12.3456, train_val_gap=0.012345,
                          best_iter=20, wall_time_s=3.14159, checkpoint="outputs/t0/ckpt.pt")

    # the stored format: what every study and bench file recorded so far holds
    assert trial.user_attrs == {
        "baseline": "in the search space", "warmup_step": 512, "budget_step": 5120,
        "lr_area_budget": 3.5, "run_dir": "outputs/t0", "config": '{"schedule": {"max_iters": 20}}',
        "worker": f"{socket.gethostname()} pid {os.getpid()}", "val_loss_se": {"0": 0.1, "256": 0.05}, "val_batches": "b-1",
        "val_batch_losses": {"0": [10.9, 10.7], "256": [7.1, 6.9]}, "lr_area": {"0": 0.0, "256": 0.25},
        "status": "completed", "stop_reason": "completed its budget", "num_params": 100,
        "num_params_non_embedding": 60, "tokens_seen": 5120, "epochs": 0.1235, "ms_per_iter": 12.35,
        "train_val_gap": 0.0123, "best_iter": 20, "wall_time_s": 3.1, "checkpoint": "outputs/t0/ckpt.pt",
    }
    for t in (trial, stored(trial)):  # a live Trial and a FrozenTrial read from JSON
        assert record.warmup_step(t) == 512 and record.budget_step(t) == 5120
        assert record.lr_area_budget(t) == 3.5
        assert record.val_loss_se(t) == {0: 0.1, 256: 0.05}
        assert record.lr_area(t) == {0: 0.0, 256: 0.25}
        assert record.val_batch_losses(t) == {0: [10.9, 10.7], 256: [7.1, 6.9]}
        assert record.val_batches(t) == "b-1"
        assert record.config_json(t) == '{"schedule": {"max_iters": 20}}'
        assert record.run_dir(t) == "outputs/t0"
        assert record.status(t) == "completed" and record.stop_reason(t) == "completed its budget"
        assert record.tokens_seen(t) == 5120
        assert record.baseline(t) == record.BASELINE_IN_SPACE and record.is_baseline(t)
        assert record.retry_of(t) is None and record.fail_reason(t) is None


def test_a_fail_trial_that_recorded_no_reason_names_its_killed_worker():
    study = optuna.create_study()
    trial = study.ask()
    record.set_run(trial, run_dir="outputs/t0", config="{}")
    study.tell(trial, state=optuna.trial.TrialState.FAIL)  # as a heartbeat check fails a dead worker's trial
    [killed] = study.get_trials()
    assert record.fail_reason(killed) == (f"killed: its worker ({socket.gethostname()} pid {os.getpid()}) died "
                                          "without a word (SIGKILL, the kernel's OOM killer, a lost machine)")
    said = study.ask()
    record.set_run(said, run_dir="outputs/t1", config="{}")
    record.set_fail_reason(said, "out of memory: CUDA")
    study.tell(said, state=optuna.trial.TrialState.FAIL)
    assert record.fail_reason(study.get_trials()[1]) == "out of memory: CUDA"
    running = study.ask()
    record.set_run(running, run_dir="outputs/t2", config="{}")
    assert record.fail_reason(running) is None  # only a FAIL trial is said to be killed
    assert record.fail_reason(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL)) is None  # nothing known


def test_each_evaluation_rewrites_a_copy_and_names_the_batches_once():
    study = optuna.create_study()
    trial = study.ask()
    evals = record.EvalRecorder(trial)
    evals.record(0, val_loss_se=0.1)  # no LR sum, no batch losses: neither is written
    assert trial.user_attrs == {"val_loss_se": {"0": 0.1}}
    evals.record(100, val_loss_se=0.2, batch_losses=[1.0, 2.0], val_batches="first")
    first = trial.user_attrs["val_batch_losses"]
    evals.record(200, val_loss_se=0.3, batch_losses=[3.0, 4.0], val_batches="ignored")
    assert trial.user_attrs["val_batches"] == "first"
    assert first == {"100": [1.0, 2.0]}  # what was written is not changed afterwards
    assert trial.user_attrs["val_batch_losses"] == {"100": [1.0, 2.0], "200": [3.0, 4.0]}


def test_readers_give_their_defaults_for_missing_or_malformed_attrs():
    bare = optuna.trial.create_trial(value=1.0)
    assert record.warmup_step(bare) == 0
    assert record.budget_step(bare) is None and record.lr_area_budget(bare) is None
    assert record.val_loss_se(bare) == {} and record.lr_area(bare) == {}
    assert record.val_batch_losses(bare) == {} and record.val_batches(bare) is None
    assert record.tokens_seen(bare) is None and not record.is_baseline(bare)
    assert record.config_json(bare) is None and record.retry_of(bare) is None
    assert record.run_dir(bare) is None
    odd = optuna.trial.create_trial(value=1.0, user_attrs={
        "warmup_step": "soon", "budget_step": [1], "lr_area_budget": "x", "val_batches": "", "run_dir": 3,
        "val_loss_se": {"0": 0.1, "x": 0.2, "1.5": 0.3, "100": "n/a"},
        "lr_area": [0.0, 1.0],
        "val_batch_losses": {"0": [1.0, 2.0], "100": "1.5", "200": [1.0, None]},
    })
    assert record.warmup_step(odd) == 0 and record.budget_step(odd) is None
    assert record.lr_area_budget(odd) is None and record.val_batches(odd) is None
    assert record.run_dir(odd) is None
    assert record.val_loss_se(odd) == {0: 0.1}
    assert record.lr_area(odd) == {}
    assert record.val_batch_losses(odd) == {0: [1.0, 2.0]}


def test_a_retry_names_the_first_trial_of_its_series():
    assert record.retry_attrs(3) == {"retry_of": 3}
    retry = optuna.trial.create_trial(value=1.0, user_attrs=record.retry_attrs(3))
    assert record.retry_of(retry) == 3


def test_fail_reason_and_replay_curve():
    study = optuna.create_study()
    trial = study.ask()
    record.set_fail_reason(trial, "out of memory")
    record.set_replay_curve(trial, 7)
    assert trial.user_attrs == {"fail_reason": "out of memory", "curve": 7}
    assert record.fail_reason(trial) == "out of memory" and record.replay_curve(trial) == 7


@pytest.mark.parametrize("path", ["bench/results/lr_warmup_grid_seed0_paired_curves.json"])
def test_bench_curves_read_as_user_attrs(path):
    """A recorded curve set, put back into user attrs the way the objective stores them, reads
    back to the same numbers (the replay and record_curves agree on the format)."""
    data = json.loads((Path(__file__).resolve().parents[1] / path).read_text())
    t = data["trials"][0]
    attrs = {"warmup_step": t["warmup_step"], "budget_step": t["budget_step"],
             "lr_area_budget": t["lr_area_budget"], "val_batches": t["val_batches"],
             "val_loss_se": {str(s): v for s, v in zip(t["steps"], t["se"])},
             "lr_area": {str(s): v for s, v in zip(t["steps"], t["lr_area"])},
             "val_batch_losses": {str(s): v for s, v in zip(t["steps"], t["batch_losses"])}}
    trial = optuna.trial.create_trial(value=1.0, user_attrs=json.loads(json.dumps(attrs)))
    assert [record.val_loss_se(trial)[s] for s in t["steps"]] == t["se"]
    assert [record.lr_area(trial)[s] for s in t["steps"]] == t["lr_area"]
    assert [record.val_batch_losses(trial)[s] for s in t["steps"]] == t["batch_losses"]
    assert record.warmup_step(trial) == t["warmup_step"] and record.budget_step(trial) == t["budget_step"]


def test_a_continuation_and_a_pause_read_back():
    study = optuna.create_study()
    trial = study.ask()
    record.set_paused_at_rung(trial, 2)
    for key, value in record.continuation_attrs(first=3, paused=7).items():
        trial.set_user_attr(key, value)
    frozen = study.get_trials()[0]
    assert (record.paused_at_rung(frozen), record.retry_of(frozen), record.continues(frozen)) == (2, 3, 7)
    assert record.continues(study.ask()) is None and record.paused_at_rung(study.get_trials()[1]) is None
