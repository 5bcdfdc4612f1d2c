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
from sweeps.cooldown import RungsResult, RungValue, rungs_of, stable_phase_settings, train_with_rungs
from sweeps.plateau_pruner import StopsLeaders
from sweeps.retries import first_of_series
from sweeps.rung_pruner import RungHalvingPruner
from sweeps.search_space import SearchSpace
from sweeps.trial_resume import continue_previous_attempt, previous_attempt, report_carried
from sweeps.trial_record import BASELINE_AS_GIVEN, EvalRecorder, RungRecorder
from trainer import (CheckpointError, ConfigError, DataError, EvalMetrics, as_train_config, checkpoint_config, check_config,
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

    With `rungs` (study.fidelity=cooldown), a trial is its stable phase and a cooldown branch at
    each rung (sweeps.cooldown): it reports each rung's decayed val loss at the step of the rung's
    horizon, records its stable curve in user attrs only, and returns the decayed val loss of its
    last rung.
    """

    def __init__(self, space: SearchSpace, compose: Callable[[list], DictConfig], study_dir: Path,
                 baseline: Optional[str] = None, artifact_store: Optional[FileSystemArtifactStore] = None,
                 verbose: bool = False, rungs=None):
        self.space = space
        self.compose = compose  # Hydra overrides -> the trial's full config
        self.study_dir = Path(study_dir)
        # Trial 0 is the baseline (BASELINE_IN_SPACE: the sampler pins its values;
        # BASELINE_AS_GIVEN: nothing is sampled), None: no baseline.
        self.baseline = baseline
        self.artifact_store = artifact_store
        self.verbose = verbose  # the trial's log (always in its run dir's train.log) on the console too
        self.rungs = rungs  # a sweeps.config.RungsConfig with study.fidelity=cooldown, else None

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
            value = self._train_rungs(trial, train_cfg) if self.rungs is not None else self._train(trial, train_cfg)
        except optuna.TrialPruned as e:
            self._attach(trial, train_cfg, f"pruned: {e}")
            raise
        except Exception as e:  # TrialFailed, a full disk, a bug: the run dir still shows how far it got
            self._attach(trial, train_cfg, f"failed: {(str(e).strip().splitlines() or [type(e).__name__])[0]}")
            raise
        self._attach(trial, train_cfg, f"complete, {'decayed' if self.rungs is not None else 'best'} val loss {value:.4f}")
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
        groups = batch_groups(train_cfg.eval_iters, len(eval_points(train_cfg)))
        if continuation is not None:
            report_carried(trial, evals, continuation,
                           lambda losses: batch_group_means(losses, groups) if groups and losses else None)
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
                result = self._train_fitting_memory(trial, train_cfg, lambda cfg: train(cfg, on_eval=on_eval, log=log), log)
        except Exception as e:
            self._fail_on_config_or_memory(trial, e)
            raise
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

    @staticmethod
    def _fail_on_config_or_memory(trial: optuna.Trial, e: Exception) -> None:
        """TrialFailed, with the reason recorded, for a config that does not fit the data, the
        tokenizer or the device's memory; any other exception is left to the caller to raise
        (a CheckpointError is the disk, not the params: it is queued again, sweeps.retries)."""
        if isinstance(e, CheckpointError):
            return
        if isinstance(e, (ConfigError, DataError)):  # the sampled values do not fit the data or tokenizer
            trial_record.set_fail_reason(trial, f"impossible config: {e}")
            raise TrialFailed(f"impossible config: {e}") from None
        if isinstance(e, (torch.OutOfMemoryError, RuntimeError)) and is_out_of_memory(e):
            trial_record.set_fail_reason(trial, f"out of memory: {_first_line(e)}")
            raise TrialFailed(f"out of memory: {_first_line(e)}") from None

    def _train_rungs(self, trial: optuna.Trial, train_cfg) -> float:
        """Train the trial's stable phase rung by rung with a cooldown branch at each, reporting
        each branch's decayed val loss; that of the last rung, or TrialPruned."""
        try:
            rungs = rungs_of(train_cfg.schedule.max_iters, self.rungs.count, self.rungs.eta,
                             self.rungs.cooldown_fraction)
        except ConfigError as e:
            trial_record.set_fail_reason(trial, f"impossible config: {e}")
            raise TrialFailed(f"impossible config: {e}") from None
        pruner = trial.study.pruner
        trial_record.set_rung_steps(trial, [r.horizon * tokens_per_iter(train_cfg) for r in rungs])
        evals, record = EvalRecorder(trial), RungRecorder(trial)
        train_cfg, carried = self._continue_rungs(trial, train_cfg, rungs, record, evals)

        def on_stable_eval(m: EvalMetrics) -> None:
            record.stable(m.tokens, m.val_loss)
            evals.record(m.tokens, val_loss_se=m.val_loss_se, lr_area=m.lr_area)

        def on_rung(v: RungValue) -> Optional[str]:
            record.rung(v.step, v.val_loss, v.rung.cooldown_iters * tokens_per_iter(train_cfg))
            trial.report(v.val_loss, v.step)
            if v.rung.index == len(rungs) - 1 or not trial.should_prune():
                return None
            verdict = pruner.last_decision(trial.number) if isinstance(pruner, RungHalvingPruner) else None
            if verdict is not None and verdict.promotions:  # its stable checkpoint stays for a continuation
                trial_record.set_paused_at_rung(trial, v.rung.index)
            return verdict.reason if verdict else f"{type(pruner).__name__} pruned at rung {v.rung.index}"

        try:
            with trial_log(Path(train_cfg.out_dir), echo=self.verbose) as log:
                result: RungsResult = self._train_fitting_memory(
                    trial, train_cfg,
                    lambda cfg: train_with_rungs(cfg, rungs, self.rungs.shape, on_rung, on_stable_eval, log,
                                                 carried if cfg.init_from == "resume" else None), log)
        except Exception as e:
            self._fail_on_config_or_memory(trial, e)
            raise
        finally:
            _free_device_memory()
        stable = result.stable
        gap = stable.last_eval.val_loss - stable.last_eval.train_loss if stable and stable.last_eval else None
        trial_record.record_outcome(
            trial, status=result.status, stop_reason=result.stop_reason, num_params=stable.num_params,
            num_params_non_embedding=stable.num_params_non_embedding, tokens_seen=result.tokens_trained,
            epochs=result.tokens_trained / stable.unique_train_tokens, ms_per_iter=result.ms_per_iter,
            train_val_gap=gap, best_iter=stable.best_iter, wall_time_s=result.wall_time_s,
            checkpoint=stable.checkpoint_path)
        if result.status != "completed" or result.value is None:
            raise optuna.TrialPruned(result.stop_reason)
        return result.value

    @staticmethod
    def _continue_rungs(trial: optuna.Trial, train_cfg, rungs, record: RungRecorder, evals: EvalRecorder):
        """A retry of a cooldown trial: its previous attempt's stable phase continued (when its
        checkpoint holds the same stable phase), its rung values and stable curve (with each
        evaluation's SE and LR area) reported again. (train_cfg, the carried RungValues)."""
        def same_stable_phase(ckpt: Path, cfg) -> bool:
            return stable_phase_settings(checkpoint_config(ckpt)) == stable_phase_settings(asdict(cfg))

        train_cfg, continuation = continue_previous_attempt(trial, train_cfg, same_run=same_stable_phase, carry_all=True)
        if continuation is None:
            return train_cfg, []
        trial_record.set_resumed_from(trial, continuation.attempt, continuation.step)
        attempt = previous_attempt(trial)
        stable = {step: loss for step, loss in trial_record.stable_val_loss(attempt).items() if step <= continuation.step}
        se, area = trial_record.val_loss_se(attempt), trial_record.lr_area(attempt)
        # the stable phase's metrics.jsonl holds its evaluations, one it was killed before recording too
        for m in continuation.unreported(set(stable)):
            stable[m.tokens], se[m.tokens], area[m.tokens] = m.val_loss, m.val_loss_se, m.lr_area
        for step, loss in sorted(stable.items()):
            record.stable(step, loss)
            if se.get(step) is not None:
                evals.record(step, val_loss_se=se[step], lr_area=area.get(step))
        per_iter, carried = tokens_per_iter(train_cfg), []
        by_step = {r.horizon * per_iter: r for r in rungs}
        for e in continuation.evals:  # one value per rung it reached
            rung = by_step.get(e.step)
            if rung is None:
                continue
            record.rung(e.step, e.val_loss, rung.cooldown_iters * per_iter)
            trial.report(e.val_loss, e.step)
            carried.append(RungValue(rung, e.step, e.val_loss, float("nan"), ""))
        return train_cfg, carried

    def _train_fitting_memory(self, trial: optuna.Trial, train_cfg, run: Callable, log):
        """`run(train_cfg)`; out of memory, run it once more from scratch at half the micro-batch
        with twice the accumulation (the same tokens per iteration: the same run, comparable with
        the others), recording the error; out of memory again, or a micro-batch that cannot be
        halved, raises it."""
        try:
            return run(train_cfg)
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
        return run(dataclasses.replace(smaller, init_from="scratch"))
