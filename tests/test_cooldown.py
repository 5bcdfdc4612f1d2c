"""sweeps.cooldown: rungs, their branch configs, and a real trial trained rung by rung."""

from __future__ import annotations

import dataclasses
import math

import pytest

from sweeps.cooldown import (Rung, branch_config, check_cooldown_study, rungs_of, stable_config,
                             train_with_rungs)
from tests.test_train import tiny_config
from trainer import ConfigError, get_lr, train, wsd_decay_start


def test_rungs_are_horizons_max_iters_over_powers_of_eta_each_ending_in_its_cooldown():
    assert rungs_of(400, 3, 3, 0.2) == [Rung(0, 44, 35), Rung(1, 133, 106), Rung(2, 400, 320)]
    assert [r.cooldown_iters for r in rungs_of(400, 3, 3, 0.2)] == [9, 27, 80]


@pytest.mark.parametrize("count, eta, fraction, message", [
    (6, 3, 0.2, "the shortest needs at least one stable and one cooldown iteration"),
    (0, 3, 0.2, "count=0, eta=3 is invalid"),
    (3, 1, 0.2, "count=3, eta=1 is invalid"),
    (3, 3, 1.0, "cooldown_fraction=1.0 is invalid"),
])
def test_rungs_that_cannot_be_told_apart_are_refused(count, eta, fraction, message):
    with pytest.raises(ConfigError, match=message):
        rungs_of(100, count, eta, fraction)


def test_a_cooldown_study_refuses_searching_what_the_rungs_replace_and_warns_of_long_warmups():
    with pytest.raises(ConfigError, match="schedule.lr_decay_fraction would be ignored"):
        check_cooldown_study(400, 3, 3, 0.2, ["schedule.lr", "schedule.lr_decay_fraction"], 10)
    assert check_cooldown_study(400, 3, 3, 0.2, ["schedule.lr", "schedule.warmup_fraction"], 10) == []
    [warning] = check_cooldown_study(400, 3, 3, 0.2, ["schedule.lr"], 120)
    assert "rung(s) 0, 1 (from iteration 35): a trial is judged only at rungs after its warmup" in warning


def test_branch_is_the_wsd_run_of_its_horizon_from_the_stable_phase(tmp_path):
    cfg = tiny_config(tmp_path, **{"schedule.max_iters": 300, "schedule.warmup_fraction": 0.1,
                                  "schedule.min_lr_ratio": 0.1})
    rung = rungs_of(300, 3, 3, 0.2)[1]  # horizon 100, cooldown from 80
    stable = stable_config(cfg, rung.decay_start, resume=False)
    branch = branch_config(cfg, rung, tmp_path / "b", "1-sqrt")
    assert stable.schedule.warmup_iters == branch.schedule.warmup_iters == 30  # warmup of the whole trial
    assert wsd_decay_start(branch.schedule) == rung.decay_start == 80
    # the same LR as the stable phase up to the branch, then down to min_lr at the horizon
    assert all(get_lr(it, stable.schedule) == get_lr(it, branch.schedule) for it in range(80))
    assert get_lr(100, branch.schedule) == pytest.approx(cfg.schedule.lr * 0.1)


def test_a_trial_trained_rung_by_rung_ends_as_the_wsd_run_of_its_length(tmp_path):
    cfg = tiny_config(tmp_path, **{"schedule.max_iters": 36, "eval_interval": 12, "schedule.warmup_iters": 2})
    rungs = rungs_of(36, 3, 3, 0.25)
    seen = []
    result = train_with_rungs(cfg, rungs, "linear", on_rung=lambda v: seen.append(v) and None, log=lambda _: None)
    assert result.status == "completed" and [v.rung for v in seen] == rungs
    assert [v.step for v in seen] == [r.horizon * 4 * 32 for r in rungs]  # the horizon, in tokens
    assert all(math.isfinite(v.val_loss) for v in seen) and seen[-1].val_loss < seen[0].val_loss
    assert result.branch_tokens == sum(r.cooldown_iters for r in rungs) * 4 * 32
    assert result.tokens_trained == rungs[-1].decay_start * 4 * 32 + result.branch_tokens
    # only the latest branch keeps its checkpoint; the stable phase keeps its own, at its last iteration
    assert [(tmp_path / "run" / "cooldown" / f"rung_{k}" / "ckpt.pt").is_file() for k in range(3)] == [False, False, True]
    assert result.stable.iters == rungs[-1].decay_start and result.stable.checkpoint_path

    # the last rung's value is exactly that of a wsd run of the trial's length, trained in one go
    whole = dataclasses.replace(cfg, out_dir=str(tmp_path / "whole"), schedule=dataclasses.replace(
        cfg.schedule, name="wsd", decay_fraction=0.25, decay_shape="linear"))
    assert train(whole, log=lambda _: None).last_eval.val_loss == pytest.approx(seen[-1].val_loss, abs=1e-5)


def test_rungs_inside_a_trials_warmup_are_skipped_but_never_the_last(tmp_path):
    cfg = tiny_config(tmp_path, **{"schedule.max_iters": 36, "eval_interval": 12, "schedule.warmup_iters": 30})
    rungs = rungs_of(36, 3, 3, 0.25)  # cooldowns from 3, 9 and 27: all inside the 30-iteration warmup
    seen = []
    result = train_with_rungs(cfg, rungs, "1-sqrt", on_rung=lambda v: seen.append(v.rung.index) and None,
                              log=lambda _: None)
    assert seen == [2] and result.status == "completed"
    assert result.tokens_trained == (27 + 9) * 128  # no branch paid for the skipped rungs


def test_a_trial_stopped_at_a_rung_trains_no_further(tmp_path):
    cfg = tiny_config(tmp_path, **{"schedule.max_iters": 36, "eval_interval": 12, "schedule.warmup_iters": 2})
    rungs = rungs_of(36, 3, 3, 0.25)
    result = train_with_rungs(cfg, rungs, "1-sqrt", on_rung=lambda v: "behind" if v.rung.index == 1 else None,
                              log=lambda _: None)
    assert result.status == "stopped" and result.stop_reason == "behind" and len(result.values) == 2
    assert result.stable.iters == rungs[1].decay_start
    assert result.tokens_trained == (rungs[1].decay_start + rungs[0].cooldown_iters + rungs[1].cooldown_iters) * 128


@pytest.mark.parametrize("sweep", ["lr_warmup", "lr_warmup_grid", "schedule", "regularization", "model_size",
                                   "optimizer", "full"])
def test_every_sweep_runs_with_cooldown_rungs_but_the_one_searching_the_decay(sweep):
    from sweeps.compose import compose_study_config, search_space_of
    from trainer import as_train_config, warmup_iters_of

    cfg = compose_study_config([f"+sweep={sweep}", "study.fidelity=cooldown"])
    space, baseline = search_space_of(cfg), as_train_config(cfg)
    args = (baseline.schedule.max_iters, cfg.study.rungs.count, cfg.study.rungs.eta, cfg.study.rungs.cooldown_fraction,
            list(space.distributions), warmup_iters_of(baseline.schedule))
    if sweep == "schedule":  # it searches the cosine decay's length, which the rungs replace
        with pytest.raises(ConfigError, match="schedule.lr_decay_fraction would be ignored"):
            check_cooldown_study(*args)
    else:
        check_cooldown_study(*args)
