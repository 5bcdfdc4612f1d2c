"""The Optuna objective: one trial = one in-process `trainer.train` run of a composed config."""

from __future__ import annotations

import gc
import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import optuna
import torch
from omegaconf import DictConfig

from sweeps import trial_record
from sweeps.console import trial_log
from sweeps.plateau_pruner import StopsLeaders
from sweeps.retries import first_of_series
from sweeps.search_space import SearchSpace
from sweeps.trial_record import BASELINE_AS_GIVEN, EvalRecorder
from trainer import (CheckpointError, ConfigError, DataError, EvalMetrics, as_train_config, check_config, eval_points, lr_area,
                     release_freed_memory, tokens_per_iter, train, warmup_iters_of)


class TrialFailed(RuntimeError):
    """A trial that could not run (impossible config, out of memory); the study goes on."""


# Each evaluation's batch losses are recorded as the means of at most MAX_BATCH_GROUPS runs of
# batches (a paired standard error needs a few dozen), and all of a trial's as at most
# BATCH_LOSSES_CHARS characters: a user attr is one TEXT column (64 KB in MySQL), rewritten
# whole at every evaluation.
MAX_BATCH_GROUPS = 32
BATCH_LOSSES_CHARS = 48_000


def trial_dir(study_dir: Path, number: int) -> Path:
    return Path(study_dir) / f"trial_{number:04d}"


def batch_groups(eval_iters: int, n_evals: int) -> int:
    """Runs of eval batches to record per evaluation, for a trial with `n_evals` evaluations of
    `eval_iters` batches each (in JSON about 10 characters a number and 12 a step); 0: too many
    evaluations to pair."""
    groups = min(eval_iters, MAX_BATCH_GROUPS, (BATCH_LOSSES_CHARS // n_evals - 12) // 10)
    return groups if groups >= 2 else 0


def batch_group_means(losses: list, groups: int) -> list:
    """`losses` as the means of `groups` consecutive runs of near-equal length."""
    return [round(float(run.mean()), 5) for run in np.array_split(np.asarray(losses, dtype=float), groups)]


class Objective:
    """Samples the trial's values, composes its config, trains it and reports every evaluation.

    The intermediate step is training tokens seen, so trials with different batch sizes, block
    sizes or lengths are compared at equal training tokens. Returns the best val loss.
    """

    def __init__(self, space: SearchSpace, compose: Callable[[list], DictConfig], study_dir: Path,
                 baseline: Optional[str] = None, verbose: bool = False):
        self.space = space
        self.compose = compose  # Hydra overrides -> the trial's full config
        self.study_dir = Path(study_dir)
        # Trial 0 is the baseline (BASELINE_IN_SPACE: the sampler pins its values;
        # BASELINE_AS_GIVEN: nothing is sampled), None: no baseline.
        self.baseline = baseline
        self.verbose = verbose  # the trial's log (always in its run dir's train.log) on the console too

    def __call__(self, trial: optuna.Trial) -> float:
        baseline = self.baseline if first_of_series(trial) == 0 else None  # trial 0, or its retry
        if baseline:
            trial_record.set_baseline(trial, baseline)
        values = {} if baseline == BASELINE_AS_GIVEN else self.space.sample(trial)
        cfg = self.compose(self.space.to_overrides(values))
        cfg.out_dir = str(trial_dir(self.study_dir, trial.number))
        try:
            train_cfg = as_train_config(cfg)
            check_config(train_cfg)
        except (ConfigError, ValueError) as e:
            trial_record.set_fail_reason(trial, f"impossible config: {e}")
            raise TrialFailed(f"impossible config: {e}") from None

        per_iter = tokens_per_iter(train_cfg)
        # The LR summed over the tokens trained (lr x tokens): the pruner projects gains over
        # the learning a trial has left, not over raw steps, so a decaying LR counts as less.
        trial_record.set_plan(
            trial, warmup_step=warmup_iters_of(train_cfg.schedule) * per_iter,
            budget_step=train_cfg.schedule.max_iters * per_iter,
            lr_area_budget=lr_area(train_cfg, train_cfg.schedule.max_iters))
        trial_record.set_run(trial, run_dir=train_cfg.out_dir, config=json.dumps(asdict(train_cfg)))
        pruner = trial.study.pruner
        evals = EvalRecorder(trial)
        groups = batch_groups(train_cfg.eval_iters, len(eval_points(train_cfg)))
        decision: dict = {}

        def on_eval(m: EvalMetrics) -> Optional[str]:
            evals.record(m.tokens, val_loss_se=m.val_loss_se, lr_area=m.lr_area,
                         batch_losses=batch_group_means(m.val_batch_losses, groups) if groups else None,
                         val_batches=m.val_batches)
            trial.report(m.val_loss, m.tokens)
            if not trial.should_prune():
                return None
            verdict = pruner.last_decision(trial.number) if isinstance(pruner, StopsLeaders) else None
            decision["stop"] = verdict is not None and verdict.stops
            decision["reason"] = verdict.reason if verdict else f"{type(pruner).__name__} pruned at step {m.tokens}"
            return decision["reason"]

        try:
            with trial_log(Path(train_cfg.out_dir), echo=self.verbose) as log:
                result = train(train_cfg, on_eval=on_eval, log=log)
        except CheckpointError:
            raise  # the disk, not the params: recorded and queued again (sweeps.retries)
        except (ConfigError, DataError) as e:  # the sampled values do not fit the data or tokenizer
            trial_record.set_fail_reason(trial, f"impossible config: {e}")
            raise TrialFailed(f"impossible config: {e}") from None
        except torch.OutOfMemoryError as e:
            trial_record.set_fail_reason(trial, f"out of memory: {str(e).splitlines()[0]}")
            raise TrialFailed(f"out of memory: {str(e).splitlines()[0]}") from None
        finally:  # memory must not grow across trials
            gc.collect()
            release_freed_memory()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()

        gap = result.last_eval.val_loss - result.last_eval.train_loss if result.last_eval else None
        trial_record.record_outcome(
            trial, status=result.status, stop_reason=result.stop_reason or "completed its budget",
            num_params=result.num_params, num_params_non_embedding=result.num_params_non_embedding,
            tokens_seen=result.tokens_seen, epochs=result.epochs, ms_per_iter=result.ms_per_iter,
            train_val_gap=gap, best_iter=result.best_iter, wall_time_s=result.wall_time_s,
            checkpoint=result.checkpoint_path)
        if result.status == "diverged":
            raise optuna.TrialPruned(f"diverged: {result.stop_reason}")
        if result.status == "stopped" and not decision.get("stop"):
            raise optuna.TrialPruned(result.stop_reason)
        return result.best_val_loss
