"""A retried trial continues its previous attempt from that attempt's last checkpoint.

A trial queued again after an interruption, a killed worker or a crash (`sweeps.retries`) has the
same params, so the same run: it need not pay again for what its previous attempt trained. Trials
checkpoint at every evaluation (`checkpoint: last` in conf/study_runner.yaml, replaced atomically),
so the retry copies that attempt's `ckpt.pt` and `metrics.jsonl` into its own run dir, trains on
with `init_from=resume` (exactly as an uninterrupted run would, on CPU bit for bit), and first
reports the attempt's evaluations up to the checkpoint again, with their standard errors, LR areas
and batch losses, so the pruner judges one curve. An evaluation the attempt logged in its
`metrics.jsonl` but was killed before reporting (the checkpoint is written in between) is taken
from that file. What is lost per kill is the training since the attempt's last evaluation. The
retry records the attempt and step it continued from (`resumed_from`), so the report counts
those tokens once. A continuation of a paused cooldown trial (sweeps.promotions) goes on from that
trial's checkpoint the same way.

A previous attempt without a checkpoint, or whose checkpoint holds another run (other settings:
the checkpoint policy was off, or the study's code changed), is not continued: the retry trains
from scratch, saying why.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional

import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeps import trial_record
from sweeps.config import StudyError
from sweeps.cooldown import copy_atomically
from sweeps.resume_checks import refuse_another_run_in
from sweeps.retries import first_of_series
from trainer import CHECKPOINT_NAME, METRICS_NAME, EvalMetrics, checkpoint_iter, logged_evals, tokens_per_iter


@dataclass(frozen=True)
class CarriedEval:
    """One evaluation of the previous attempt, reported again by the retry."""
    step: int
    val_loss: float
    val_loss_se: Optional[float]
    lr_area: Optional[float]
    batch_losses: Optional[List[float]]


@dataclass(frozen=True)
class Continuation:
    attempt: int  # the previous attempt's trial number
    step: int  # training tokens at its checkpoint
    evals: List[CarriedEval]
    val_batches: Optional[str]  # names the val batches of the carried batch losses
    # the evaluations up to the checkpoint in the attempt's metrics.jsonl, by step (training
    # tokens): those it was killed before reporting are only here
    logged: Dict[int, EvalMetrics]

    def unreported(self, reported: set) -> List[EvalMetrics]:
        """The logged evaluations at steps not in `reported`, in order."""
        return [m for step, m in sorted(self.logged.items()) if step not in reported]


def previous_attempt(trial: optuna.Trial) -> Optional[FrozenTrial]:
    """The trial that `trial` goes on from: the paused trial a continuation continues; for a retry,
    the latest earlier trial of its series that trained (FAIL, or paused at a rung) and left a
    checkpoint, else the latest that trained at all; None for a first attempt."""
    if trial_record.retry_of(trial) is None:
        return None
    trials = trial.study.get_trials(deepcopy=False)
    paused = trial_record.continues(trial)
    if paused is not None:
        return next((t for t in trials if t.number == paused), None)
    first = first_of_series(trial)
    attempts = [t for t in trials if t.number < trial.number and first_of_series(t) == first
                and ((t.state == TrialState.FAIL and not trial_record.refused(t)) or trial_record.paused_at_rung(t) is not None)]
    with_checkpoint = [t for t in attempts if trial_record.run_dir(t) and (Path(trial_record.run_dir(t)) / CHECKPOINT_NAME).is_file()]
    return (with_checkpoint or attempts or [None])[-1]


def _holds_this_run(run_dir: Path, train_cfg, same_run: Optional[Callable[[Path, object], bool]]) -> bool:
    if same_run is not None:
        return same_run(run_dir / CHECKPOINT_NAME, train_cfg)
    try:
        refuse_another_run_in(run_dir, train_cfg)
    except StudyError:
        return False
    return True


def at_attempts_micro_batch(trial: optuna.Trial, train_cfg, attempt: FrozenTrial):
    """`train_cfg` at the micro-batch and accumulation `attempt` trained with, when it ran out of
    memory and halved its micro-batch (the same tokens per iteration), recorded on `trial` as its
    config and its out-of-memory error; `train_cfg` itself otherwise."""
    error, recorded = trial_record.out_of_memory(attempt), trial_record.config_json(attempt)
    if error is None or recorded is None:
        return train_cfg
    was = json.loads(recorded)
    batch, accumulation = was.get("batch_size"), was.get("gradient_accumulation_steps")
    if not isinstance(batch, int) or not isinstance(accumulation, int) or batch >= train_cfg.batch_size \
            or batch * accumulation != train_cfg.batch_size * train_cfg.gradient_accumulation_steps:
        return train_cfg
    smaller = replace(train_cfg, batch_size=batch, gradient_accumulation_steps=accumulation)
    trial_record.set_out_of_memory(trial, error)
    trial_record.set_run(trial, run_dir=smaller.out_dir, config=json.dumps(asdict(smaller)))
    print(f"trial {trial.number}: trial {attempt.number} ran out of memory at batch_size={train_cfg.batch_size}; "
          f"going on at batch_size={batch}, gradient_accumulation_steps={accumulation} as it did")
    return smaller


def continue_previous_attempt(trial: optuna.Trial, train_cfg, same_run: Optional[Callable[[Path, object], bool]] = None,
                              carry_all: bool = False) -> tuple[object, Optional[Continuation]]:
    """`train_cfg` resuming the previous attempt's checkpoint, copied into this trial's run dir,
    and what to report again; (`train_cfg`, None) when there is nothing to continue. An attempt
    that ran out of memory trained at half the micro-batch (the same tokens per iteration): so
    does this trial. `same_run` ((checkpoint path, train_cfg) -> whether it holds this run) replaces the check that its settings are
    `train_cfg`'s; `carry_all` reports every value of the attempt again, not only those up to
    its checkpoint (a cooldown trial's rung values lie past its stable phase's checkpoint)."""
    attempt = previous_attempt(trial)
    if attempt is None or trial_record.run_dir(attempt) is None:
        return train_cfg, None
    source = Path(trial_record.run_dir(attempt))
    checkpoint = source / CHECKPOINT_NAME
    if not checkpoint.is_file():
        print(f"trial {trial.number}: trial {attempt.number} left no checkpoint; training from scratch")
        return train_cfg, None
    train_cfg = at_attempts_micro_batch(trial, train_cfg, attempt)
    if not _holds_this_run(source, train_cfg, same_run):
        print(f"trial {trial.number}: trial {attempt.number}'s checkpoint holds other settings; training from scratch")
        return train_cfg, None
    step = checkpoint_iter(checkpoint) * tokens_per_iter(train_cfg)
    target = Path(train_cfg.out_dir)
    target.mkdir(parents=True, exist_ok=True)
    copy_atomically(checkpoint, target / CHECKPOINT_NAME)
    logged = {m.tokens: m for m in logged_evals(source / METRICS_NAME) if m.tokens <= step}
    if (source / METRICS_NAME).is_file():
        copy_atomically(source / METRICS_NAME, target / METRICS_NAME)
    se, area, losses = (trial_record.val_loss_se(attempt), trial_record.lr_area(attempt),
                        trial_record.val_batch_losses(attempt))
    evals = [CarriedEval(s, v, se.get(s), area.get(s), losses.get(s))
             for s, v in sorted(attempt.intermediate_values.items()) if s <= step or carry_all]
    print(f"trial {trial.number}: continuing trial {attempt.number} from its checkpoint at {step:,} tokens "
          f"({len(evals)} evaluations carried over)")
    return replace(train_cfg, init_from="resume"), Continuation(attempt.number, step, evals,
                                                                trial_record.val_batches(attempt), logged)


def report_carried(trial: optuna.Trial, evals: trial_record.EvalRecorder, continuation: Continuation,
                   group_batch_losses: Callable[[list], Optional[list]]) -> None:
    """Report the previous attempt's evaluations for `trial`, in step order, and record where it
    continued from; those it logged but never reported with their batch losses as
    `group_batch_losses` stores them (as the attempt would have)."""
    trial_record.set_resumed_from(trial, continuation.attempt, continuation.step)
    recovered = [CarriedEval(m.tokens, m.val_loss, m.val_loss_se, m.lr_area, group_batch_losses(m.val_batch_losses))
                 for m in continuation.unreported({e.step for e in continuation.evals})]
    val_batches = continuation.val_batches or next((m.val_batches for m in continuation.logged.values()), None)
    for e in sorted([*continuation.evals, *recovered], key=lambda e: e.step):
        if e.val_loss_se is not None:
            evals.record(e.step, val_loss_se=e.val_loss_se, lr_area=e.lr_area, batch_losses=e.batch_losses,
                         val_batches=val_batches)
        trial.report(e.val_loss, e.step)
