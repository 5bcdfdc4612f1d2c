"""The Optuna objective: one trial = one in-process `trainer.train` run of a composed config."""

from __future__ import annotations

import dataclasses
import gc
import json
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import optuna
import torch
from omegaconf import DictConfig, OmegaConf
from optuna.artifacts import FileSystemArtifactStore

from sweeps import trial_record
from sweeps.artifacts import upload_trial_files
from sweeps.console import trial_log
from sweeps.plateau_pruner import StopsLeaders
from sweeps.retries import first_of_series
from sweeps.search_space import SearchSpace
from sweeps.trial_resume import continue_previous_attempt, report_carried
from sweeps.trial_record import BASELINE_AS_GIVEN, EvalRecorder
from trainer import (CheckpointError, ConfigError, DataError, EvalMetrics, TrainResult, as_train_config, check_config,
                     eval_points, halved_micro_batch, is_out_of_memory, lr_area, release_freed_memory, tokens_per_iter,
                     train, warmup_iters_of)


class TrialFailed(RuntimeError):
    """A trial that could not run (impossible config, out of memory); the study goes on."""


# Each evaluation's batch losses are recorded as the means of at most MAX_BATCH_GROUPS runs of
# batches (a paired standard error needs a few dozen), and all of a trial's as at most
# BATCH_LOSSES_CHARS characters: a user attr is one TEXT column (64 KB in MySQL), rewritten
# whole at every evaluation.
MAX_BATCH_GROUPS = 32
BATCH_LOSSES_CHARS = 48_000
METRIC_NAME = "val loss"  # what the objective returns, as the dashboard's charts name it


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


def _first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _free_device_memory() -> None:
    gc.collect()
    release_freed_memory()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Objective:
    """Samples the trial's values, composes its config, trains it and reports every evaluation.

    The intermediate step is training tokens seen, so trials with different batch sizes, block
    sizes or lengths are compared at equal training tokens. Returns the best val loss. With an
    `artifact_store`, a trial that got as far as its run dir uploads its config, metrics and
    curve at its end, complete, pruned or failed (sweeps.artifacts).
    """

    def __init__(self, space: SearchSpace, compose: Callable[[list], DictConfig], study_dir: Path,
                 baseline: Optional[str] = None, artifact_store: Optional[FileSystemArtifactStore] = None,
                 verbose: bool = False):
        self.space = space
        self.compose = compose  # Hydra overrides -> the trial's full config
        self.study_dir = Path(study_dir)
        # Trial 0 is the baseline (BASELINE_IN_SPACE: the sampler pins its values;
        # BASELINE_AS_GIVEN: nothing is sampled), None: no baseline.
        self.baseline = baseline
        self.artifact_store = artifact_store
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
        try:
            value = self._train(trial, train_cfg)
        except optuna.TrialPruned as e:
            self._attach(trial, train_cfg, f"pruned: {e}")
            raise
        except Exception as e:  # TrialFailed, a full disk, a bug: the run dir still shows how far it got
            self._attach(trial, train_cfg, f"failed: {(str(e).strip().splitlines() or [type(e).__name__])[0]}")
            raise
        self._attach(trial, train_cfg, f"complete, best val loss {value:.4f}")
        return value

    def _attach(self, trial: optuna.Trial, train_cfg, outcome: str) -> None:
        if self.artifact_store is not None:
            upload_trial_files(self.artifact_store, trial, train_cfg.out_dir,
                               OmegaConf.to_yaml(OmegaConf.structured(train_cfg)), outcome)

    def _train(self, trial: optuna.Trial, train_cfg) -> float:
        """Train the trial's run, reporting each evaluation; the best val loss, or TrialPruned."""
        pruner = trial.study.pruner
        evals = EvalRecorder(trial)
        train_cfg, continuation = continue_previous_attempt(trial, train_cfg)  # a retry goes on from its checkpoint
        if continuation is not None:
            report_carried(trial, evals, continuation)
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
                result = self._train_fitting_memory(trial, train_cfg, on_eval, log)
        except CheckpointError:
            raise  # the disk, not the params: recorded and queued again (sweeps.retries)
        except (ConfigError, DataError) as e:  # the sampled values do not fit the data or tokenizer
            trial_record.set_fail_reason(trial, f"impossible config: {e}")
            raise TrialFailed(f"impossible config: {e}") from None
        except (torch.OutOfMemoryError, RuntimeError) as e:
            if not is_out_of_memory(e):
                raise
            trial_record.set_fail_reason(trial, f"out of memory: {_first_line(e)}")
            raise TrialFailed(f"out of memory: {_first_line(e)}") from None
        finally:  # memory must not grow across trials
            _free_device_memory()

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

    def _train_fitting_memory(self, trial: optuna.Trial, train_cfg, on_eval, log) -> TrainResult:
        """Train; out of memory, train once more from scratch at half the micro-batch with twice
        the accumulation (the same tokens per iteration: the same run, comparable with the
        others), recording the error; out of memory again, or a micro-batch that cannot be
        halved, raises it."""
        try:
            return train(train_cfg, on_eval=on_eval, log=log)
        except (torch.OutOfMemoryError, RuntimeError) as e:
            smaller = halved_micro_batch(train_cfg) if is_out_of_memory(e) else None
            if smaller is None:
                raise
            error = _first_line(e)
        _free_device_memory()  # outside the except block: its traceback holds the failed step's tensors
        message = (f"trial {trial.number}: out of memory at batch_size={train_cfg.batch_size} ({error}); training "
                   f"it again at batch_size={smaller.batch_size}, gradient_accumulation_steps="
                   f"{smaller.gradient_accumulation_steps} (the same tokens per iteration)")
        log(message)  # in the trial's train.log, and on the console however verbose
        if not self.verbose:
            print(message)
        trial_record.set_out_of_memory(trial, error)
        trial_record.set_run(trial, run_dir=smaller.out_dir, config=json.dumps(asdict(smaller)))
        return train(dataclasses.replace(smaller, init_from="scratch"), on_eval=on_eval, log=log)
