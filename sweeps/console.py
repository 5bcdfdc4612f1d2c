"""What a sweep prints: a progress bar of the study, one line per finished trial, and each
trial's own log in its run dir (`train.log`), echoed to the console only with `verbose=true`."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from sweeps import trial_record
from sweeps.promotions import paused_trials
from sweeps.retries import first_of_series

TRAIN_LOG = "train.log"


def say(line: str) -> None:
    """A line on the console that leaves the progress bar (on stderr) in place below it."""
    tqdm.write(line, file=sys.stdout)
    sys.stdout.flush()


@contextmanager
def trial_log(run_dir: Path, echo: bool) -> Iterator[Callable[[str], None]]:
    """A `log` for trainer.train: each line appended to `run_dir/train.log` (flushed, so a killed
    trial's log is whole up to its last line), and printed too when `echo`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / TRAIN_LOG, "a") as f:
        def log(line: str) -> None:
            f.write(line + "\n")
            f.flush()
            if echo:
                say(line)
        yield log


def _params(trial: FrozenTrial) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items())


def trial_line(trial: FrozenTrial) -> str:
    """`trial 3 (schedule.lr=0.0012, ...; 3.32M params): val loss 5.8440, COMPLETE: completed its budget`."""
    n_params = trial_record.num_params(trial)
    size = f"; {n_params / 1e6:.2f}M params" if n_params else ""
    head = f"trial {trial.number} ({_params(trial) or 'the baseline, as given'}{size})"
    rungs = trial_record.rung_val_loss(trial)  # a cooldown trial's values are decayed losses at rungs
    if trial.state == TrialState.COMPLETE:
        loss = f"{'decayed ' if rungs else ''}val loss {trial.value:.4f}"
        why = trial_record.stop_reason(trial) or "completed"
    elif trial.state == TrialState.PRUNED and rungs:
        last = max(rungs)
        loss = f"decayed val loss {rungs[last]:.4f} at its last rung, {last:,} tokens"
        why = trial_record.stop_reason(trial) or "pruned"
    elif trial.state == TrialState.PRUNED:
        seen = trial.intermediate_values
        loss = f"best val loss {min(seen.values()):.4f} at {max(seen):,} tokens" if seen else "no evaluation"
        why = trial_record.stop_reason(trial) or "pruned"
    else:
        loss = "no val loss"
        why = trial_record.fail_reason(trial) or "see the log"
    return f"{head}: {loss}, {trial.state.name}: {why}"


def finished_configs(trials) -> set:
    """The configs (series, sweeps.retries.first_of_series) with a finished trial: a paused trial's
    config counts from its pause, and once, however often it is continued."""
    return {first_of_series(t) for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)}


class StudyProgress:
    """An Optuna callback: after each trial of this worker, its line and the study's progress bar
    (configs finished of `n_trials` with pruned, paused and failed trials, best val loss and its
    trial, tokens, ETA)."""

    def __init__(self, study: optuna.Study, n_trials: int):
        already = len(finished_configs(study.get_trials(deepcopy=False)))
        self.bar = tqdm(total=n_trials, initial=min(already, n_trials), desc=f"study {study.study_name}", unit="trial", file=sys.stderr,
                        dynamic_ncols=True,
                        bar_format="{desc} |{bar:20}| {n_fmt}/{total_fmt} finished{postfix} [{elapsed}<{remaining}]")
        self.update(study)

    def update(self, study: optuna.Study) -> None:
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = min(complete, key=lambda t: t.value) if complete else None
        tokens = sum(trial_record.tokens_trained(t) for t in trials)
        paused = len(paused_trials(trials))
        self.bar.n = min(len(finished_configs(trials)), self.bar.total)
        self.bar.set_postfix_str(
            f"{sum(t.state == TrialState.PRUNED and trial_record.paused_at_rung(t) is None for t in trials)} pruned, "
            + (f"{paused} paused, " if paused else "")
            + f"{sum(t.state == TrialState.FAIL for t in trials)} failed, "
            + (f"best {best.value:.4f} (trial {best.number}), " if best else "no best yet, ")
            + f"{tokens:,} tokens", refresh=False)
        self.bar.refresh()

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        say(trial_line(trial))
        self.update(study)

    def close(self) -> None:
        self.bar.close()
