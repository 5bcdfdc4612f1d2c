"""What a trial records: the one place that names its Optuna user attrs and reads and writes them.

Every attr is written by a ``set_*`` / ``record_*`` function or :class:`EvalRecorder` below, and
read, where anything reads it, by the reader of the attr's name; nothing else spells a key
(``tests/test_architecture.py`` checks). The key strings and the stored formats are those of
every study recorded so far, so old studies still read. Steps are
training tokens (what the objective reports); a per-step map is stored as a JSON object keyed
by ``str(step)``.

Plan, written before training (:func:`set_plan`, :func:`set_run`):

``warmup_step``      int: the step at which the trial's LR warmup ends.
``budget_step``      int: its planned final step (``max_iters`` x tokens per iteration).
``lr_area_budget``   float: the LR summed over the training tokens of its whole budget.
``run_dir``          str: its output directory.
``config``           str: its :class:`trainer.config.TrainConfig` as JSON (``asdict``).
``worker``           str: the process that runs it, ``"<host> pid <pid>"``: a trial whose worker
                     is killed records nothing more, and this names the process that died.

Evaluations, each map rewritten whole after every evaluation (:class:`EvalRecorder`):

``val_loss_se``      {str(step): float}: the standard error of that evaluation's val loss.
``lr_area``          {str(step): float}: the LR summed over the training tokens before that step.
``val_batch_losses`` {str(step): [float, ...]}: the val loss of each eval batch (or of each run
                     of batches) at that step; absent when too few or too many to pair.
``val_batches``      str: names the val batches those losses were measured on (the same at
                     every evaluation); written with the first batch losses.

Cooldown rungs (``study.fidelity=cooldown``, :class:`RungRecorder`), each map rewritten whole:

``rung_val_loss``    {str(step): float}: the decayed val loss of each rung reached, at the step
                     of its horizon (training tokens); the same values are the trial's reports.
``stable_val_loss``  {str(step): float}: the stable phase's val loss at each of its evaluations
                     (a constant LR: never reported, so no pruner mixes it with decayed values).
``cooldown_tokens``  int: the tokens its cooldown branches trained (in ``tokens_seen`` too).
``rung_steps``       [int, ...]: the horizon step of each of its rungs, shortest first, written before
                     training: the pruner matches trials by rung, whatever their tokens per
                     iteration, and a rung skipped inside the trial's warmup leaves no value.

Outcome, written after training (:func:`record_outcome`), from :class:`trainer.TrainResult`:

``status``           str: ``"completed"``, ``"stopped"`` or ``"diverged"``.
``stop_reason``      str: why it ended (``"completed its budget"`` when it ran it all).
``num_params``, ``num_params_non_embedding``  int: the model's parameter counts.
``tokens_seen``      int: the training tokens it ran.
``epochs``           float (4 decimals): passes over the training data.
``ms_per_iter``      float (2 decimals): mean time per iteration.
``train_val_gap``    float (4 decimals) or None: val minus train loss at the last evaluation.
``best_iter``        int: the iteration of its best val loss.
``wall_time_s``      float (1 decimal): its training time.
``checkpoint``       str or None: the path of its checkpoint.

Identity and failures:

``baseline``         str, on the baseline trial (trial 0) and its retries only:
                     :data:`BASELINE_IN_SPACE` or :data:`BASELINE_AS_GIVEN`.
``retry_of``         int, on a queued retry or continuation only: the number of the first trial of
                     its series, the trials that run one config (:func:`retry_attrs`, :func:`retry_of`).
``continues``        int, on a continuation only (:func:`continuation_attrs`): the paused trial whose
                     stable phase it continues past that trial's last rung (ASHA's promotions,
                     ``study.rungs.promotions``).
``paused_at_rung``   int, on a PRUNED cooldown trial that paused with its checkpoint kept
                     (:func:`set_paused_at_rung`): the rung index it stopped at; a continuation
                     may go on from there.
``fail_reason``      str, on a FAIL trial: why it could not run (:func:`fail_reason` names a
                     killed worker for one that recorded none).
``resumed_from``     {"trial": int, "step": int}, on a retry that continued its previous
                     attempt's checkpoint (:func:`set_resumed_from`): that attempt and the step
                     (training tokens) it continued from; the steps up to it were trained there.
``out_of_memory``    str, on a trial that ran out of memory and was run again at half the
                     micro-batch with twice the accumulation (:func:`set_out_of_memory`): the error.

Bench only (``bench/pruner_replay.py``): ``curve``, int, the index of the replayed curve.

(The study's own user attr ``fixed_settings``, the settings its trials share, is
``sweeps.resume_checks.STUDY_SETTINGS_ATTR``.)

Readers take a :class:`~optuna.trial.FrozenTrial` or a live :class:`~optuna.trial.Trial`
(anything with ``user_attrs``) and never raise on a missing or malformed attr (but
:func:`replay_curve`, which the replay always sets): they return the default named in their
docstring (the consumer decides what that means), and a per-step reader leaves out the
entries it cannot read.
"""

from __future__ import annotations

import os
import socket
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol

__all__ = [
    "BASELINE_ATTR", "BASELINE_AS_GIVEN", "BASELINE_IN_SPACE", "BEST_ITER", "BUDGET_STEP",
    "CHECKPOINT", "CONFIG", "COOLDOWN_TOKENS", "EPOCHS", "RUNG_VAL_LOSS", "RungRecorder", "STABLE_VAL_LOSS",
    "RUNG_STEPS", "cooldown_tokens", "rung_steps", "rung_val_loss", "set_rung_steps", "stable_val_loss", "EvalRecorder", "FAIL_REASON", "LR_AREA",
    "LR_AREA_BUDGET", "MS_PER_ITER", "NUM_PARAMS", "NUM_PARAMS_NON_EMBEDDING", "OUT_OF_MEMORY", "REPLAY_CURVE", "RESUMED_FROM",
    "RETRY_OF", "CONTINUES", "PAUSED_AT_RUNG", "continuation_attrs", "continues", "paused_at_rung",
    "set_paused_at_rung", "RUN_DIR", "STATUS", "STOP_REASON", "TOKENS_SEEN", "TRAIN_VAL_GAP", "USER_ATTRS",
    "VAL_BATCHES", "VAL_BATCH_LOSSES", "VAL_LOSS_SE", "WALL_TIME_S", "WARMUP_STEP", "baseline",
    "budget_step", "config_json", "fail_reason", "is_baseline", "lr_area", "lr_area_budget",
    "out_of_memory", "record_outcome", "replay_curve", "resumed_from", "retry_attrs", "retry_of", "run_dir",
    "set_baseline", "set_fail_reason", "set_out_of_memory", "set_plan", "set_replay_curve", "set_resumed_from",
    "set_run", "status", "stop_reason",
    "tokens_seen", "val_batch_losses", "val_batches", "val_loss_se", "warmup_step", "WORKER", "worker",
    "KILLED", "NOT_RUN", "refused", "tokens_trained",
]

# plan
WARMUP_STEP = "warmup_step"
BUDGET_STEP = "budget_step"
LR_AREA_BUDGET = "lr_area_budget"
RUN_DIR = "run_dir"
CONFIG = "config"
WORKER = "worker"
# evaluations
VAL_LOSS_SE = "val_loss_se"
LR_AREA = "lr_area"
VAL_BATCH_LOSSES = "val_batch_losses"
VAL_BATCHES = "val_batches"
# cooldown rungs
RUNG_VAL_LOSS = "rung_val_loss"
STABLE_VAL_LOSS = "stable_val_loss"
COOLDOWN_TOKENS = "cooldown_tokens"
RUNG_STEPS = "rung_steps"
# outcome
STATUS = "status"
STOP_REASON = "stop_reason"
NUM_PARAMS = "num_params"
NUM_PARAMS_NON_EMBEDDING = "num_params_non_embedding"
TOKENS_SEEN = "tokens_seen"
EPOCHS = "epochs"
MS_PER_ITER = "ms_per_iter"
TRAIN_VAL_GAP = "train_val_gap"
BEST_ITER = "best_iter"
WALL_TIME_S = "wall_time_s"
CHECKPOINT = "checkpoint"
# identity and failures
BASELINE_ATTR = "baseline"
RETRY_OF = "retry_of"
FAIL_REASON = "fail_reason"
OUT_OF_MEMORY = "out_of_memory"
RESUMED_FROM = "resumed_from"
CONTINUES = "continues"
PAUSED_AT_RUNG = "paused_at_rung"
# bench/pruner_replay.py
REPLAY_CURVE = "curve"

USER_ATTRS = (
    WARMUP_STEP, BUDGET_STEP, LR_AREA_BUDGET, RUN_DIR, CONFIG, WORKER,
    VAL_LOSS_SE, LR_AREA, VAL_BATCH_LOSSES, VAL_BATCHES,
    RUNG_VAL_LOSS, STABLE_VAL_LOSS, COOLDOWN_TOKENS, RUNG_STEPS,
    STATUS, STOP_REASON, NUM_PARAMS, NUM_PARAMS_NON_EMBEDDING, TOKENS_SEEN, EPOCHS, MS_PER_ITER,
    TRAIN_VAL_GAP, BEST_ITER, WALL_TIME_S, CHECKPOINT,
    BASELINE_ATTR, RETRY_OF, FAIL_REASON, OUT_OF_MEMORY, RESUMED_FROM, CONTINUES, PAUSED_AT_RUNG, REPLAY_CURVE,
)
"""Every user attr key a trial can record."""

# The values of ``baseline``: trial 0 runs the config as given, drawn with its values when they
# are a point of the search space (so the sampler learns from it), else run unsampled.
BASELINE_IN_SPACE = "in the search space"
BASELINE_AS_GIVEN = "outside the search space"


class HasUserAttrs(Protocol):
    """A FrozenTrial or a Trial: what the readers read."""

    @property
    def user_attrs(self) -> Dict[str, Any]: ...


class _Writable(Protocol):
    """A Trial (or a Study, for its own attrs): what the writers write to."""

    def set_user_attr(self, key: str, value: Any) -> None: ...


# -- writers ------------------------------------------------------------------------------------


def set_baseline(trial: _Writable, kind: str) -> None:
    """Mark ``trial`` as the study's baseline; ``kind`` is BASELINE_IN_SPACE or BASELINE_AS_GIVEN."""
    trial.set_user_attr(BASELINE_ATTR, kind)


def set_fail_reason(trial: _Writable, reason: str) -> None:
    trial.set_user_attr(FAIL_REASON, reason)


def set_out_of_memory(trial: _Writable, error: str) -> None:
    """The out-of-memory error after which the trial was run again at half the micro-batch."""
    trial.set_user_attr(OUT_OF_MEMORY, error)


def set_resumed_from(trial: _Writable, attempt: int, step: int) -> None:
    """The earlier attempt whose checkpoint at `step` (training tokens) this retry continues."""
    trial.set_user_attr(RESUMED_FROM, {"trial": attempt, "step": step})


def set_plan(trial: _Writable, *, warmup_step: int, budget_step: int,
             lr_area_budget: Optional[float] = None) -> None:
    """The trial's schedule in steps: where its warmup ends, its budget and (when known) the LR
    summed over that budget."""
    trial.set_user_attr(WARMUP_STEP, warmup_step)
    trial.set_user_attr(BUDGET_STEP, budget_step)
    if lr_area_budget is not None:
        trial.set_user_attr(LR_AREA_BUDGET, lr_area_budget)


def set_run(trial: _Writable, *, run_dir: str, config: str) -> None:
    """Where the trial runs, its full training config (JSON) and the process that runs it."""
    trial.set_user_attr(RUN_DIR, run_dir)
    trial.set_user_attr(CONFIG, config)
    trial.set_user_attr(WORKER, f"{socket.gethostname()} pid {os.getpid()}")


class EvalRecorder:
    """A trial's per-evaluation attrs, kept as they grow and written whole after each
    evaluation (before it is reported, so the pruner sees them)."""

    def __init__(self, trial: _Writable) -> None:
        self._trial = trial
        self._val_loss_se: Dict[str, float] = {}
        self._lr_area: Dict[str, float] = {}
        self._batch_losses: Dict[str, List[float]] = {}

    def record(self, step: int, *, val_loss_se: float, lr_area: Optional[float] = None,
               batch_losses: Optional[List[float]] = None, val_batches: Optional[str] = None) -> None:
        """Record the evaluation at ``step``: its standard error, the LR summed before it, and
        its batch losses on the batches named ``val_batches`` (named once, with the first)."""
        key = str(step)
        self._val_loss_se[key] = val_loss_se
        self._trial.set_user_attr(VAL_LOSS_SE, dict(self._val_loss_se))
        if batch_losses is not None:
            if not self._batch_losses:  # the same batches at every evaluation
                self._trial.set_user_attr(VAL_BATCHES, val_batches)
            self._batch_losses[key] = batch_losses
            self._trial.set_user_attr(VAL_BATCH_LOSSES, dict(self._batch_losses))
        if lr_area is not None:
            self._lr_area[key] = lr_area
            self._trial.set_user_attr(LR_AREA, dict(self._lr_area))


def set_rung_steps(trial: _Writable, steps: List[int]) -> None:
    """The horizon steps of the trial's rungs, shortest first."""
    trial.set_user_attr(RUNG_STEPS, [int(s) for s in steps])


class RungRecorder:
    """A cooldown trial's rung values and stable curve, kept as they grow and written whole."""

    def __init__(self, trial: _Writable) -> None:
        self._trial = trial
        self._rungs: Dict[str, float] = {}
        self._stable: Dict[str, float] = {}
        self._cooldown_tokens = 0

    def stable(self, step: int, val_loss: float) -> None:
        self._stable[str(step)] = val_loss
        self._trial.set_user_attr(STABLE_VAL_LOSS, dict(self._stable))

    def rung(self, step: int, val_loss: float, cooldown_tokens: int) -> None:
        """The decayed val loss of the rung whose horizon is ``step``, and its branch's tokens."""
        self._rungs[str(step)] = val_loss
        self._cooldown_tokens += cooldown_tokens
        self._trial.set_user_attr(RUNG_VAL_LOSS, dict(self._rungs))
        self._trial.set_user_attr(COOLDOWN_TOKENS, self._cooldown_tokens)


def record_outcome(trial: _Writable, *, status: str, stop_reason: str, num_params: int,
                   num_params_non_embedding: int, tokens_seen: int, epochs: float,
                   ms_per_iter: float, train_val_gap: Optional[float], best_iter: int,
                   wall_time_s: float, checkpoint: Optional[str]) -> None:
    """What the training run gave, rounded as stored."""
    for key, value in {
        STATUS: status,
        STOP_REASON: stop_reason,
        NUM_PARAMS: num_params,
        NUM_PARAMS_NON_EMBEDDING: num_params_non_embedding,
        TOKENS_SEEN: tokens_seen,
        EPOCHS: round(epochs, 4),
        MS_PER_ITER: round(ms_per_iter, 2),
        TRAIN_VAL_GAP: None if train_val_gap is None else round(train_val_gap, 4),
        BEST_ITER: best_iter,
        WALL_TIME_S: round(wall_time_s, 1),
        CHECKPOINT: checkpoint,
    }.items():
        trial.set_user_attr(key, value)


def retry_attrs(first: int) -> Dict[str, int]:
    """The user attrs of a queued retry of the series that trial ``first`` began."""
    return {RETRY_OF: first}


def continuation_attrs(first: int, paused: int) -> Dict[str, int]:
    """The user attrs of a queued continuation of trial ``paused``, of the series ``first`` began."""
    return {RETRY_OF: first, CONTINUES: paused}


def set_paused_at_rung(trial: _Writable, rung: int) -> None:
    """The trial stopped at rung ``rung`` with its checkpoint kept: a continuation may go on from it."""
    trial.set_user_attr(PAUSED_AT_RUNG, int(rung))


def set_replay_curve(trial: _Writable, index: int) -> None:
    trial.set_user_attr(REPLAY_CURVE, index)


# -- readers ------------------------------------------------------------------------------------


def _int_or_none(value: Any) -> Optional[int]:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _float_or_none(value: Any) -> Optional[float]:
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _step(key: Any) -> Optional[int]:
    """The step a per-step map's key names (``str(step)``, or an int); None if it names none."""
    if isinstance(key, str):
        step = _int_or_none(key)
        return step if step is not None and str(step) == key else None
    return key if isinstance(key, int) and not isinstance(key, bool) else None


def _per_step(raw: Any, read: Callable[[Any], Any]) -> Dict[int, Any]:
    """``raw`` (a per-step map) as {step: read(value)}, leaving out what does not read (None)."""
    out: Dict[int, Any] = {}
    if isinstance(raw, Mapping):
        for key, value in raw.items():
            step, read_value = _step(key), read(value)
            if step is not None and read_value is not None:
                out[step] = read_value
    return out


def _floats(value: Any) -> Optional[List[float]]:
    if not isinstance(value, (list, tuple)):
        return None
    try:
        return [float(x) for x in value]
    except (TypeError, ValueError, OverflowError):
        return None


def warmup_step(trial: HasUserAttrs) -> int:
    """The step at which its LR warmup ends; 0 (no warmup) when not recorded."""
    step = _int_or_none(trial.user_attrs.get(WARMUP_STEP))
    return 0 if step is None else step


def budget_step(trial: HasUserAttrs) -> Optional[int]:
    """Its planned final step; None when not recorded."""
    return _int_or_none(trial.user_attrs.get(BUDGET_STEP))


def lr_area_budget(trial: HasUserAttrs) -> Optional[float]:
    """The LR summed over its whole budget; None when not recorded."""
    return _float_or_none(trial.user_attrs.get(LR_AREA_BUDGET))


def run_dir(trial: HasUserAttrs) -> Optional[str]:
    """Its output directory (``metrics.jsonl``, ``ckpt.pt``); None when not recorded."""
    path = trial.user_attrs.get(RUN_DIR)
    return path if isinstance(path, str) and path else None


def config_json(trial: HasUserAttrs) -> Optional[str]:
    """Its training config as JSON; None when not recorded (a trial that failed before)."""
    config = trial.user_attrs.get(CONFIG)
    return config if isinstance(config, str) else None


def val_loss_se(trial: HasUserAttrs) -> Dict[int, float]:
    """{step: standard error of that evaluation's val loss}; empty when not recorded."""
    return _per_step(trial.user_attrs.get(VAL_LOSS_SE), _float_or_none)


def lr_area(trial: HasUserAttrs) -> Dict[int, float]:
    """{step: the LR summed over the training tokens before it}; empty when not recorded."""
    return _per_step(trial.user_attrs.get(LR_AREA), _float_or_none)


def val_batch_losses(trial: HasUserAttrs) -> Dict[int, List[float]]:
    """{step: the val loss of each batch (or run of batches) at it}; empty when not recorded."""
    return _per_step(trial.user_attrs.get(VAL_BATCH_LOSSES), _floats)


def val_batches(trial: HasUserAttrs) -> Optional[str]:
    """The name of the batches its batch losses were measured on; None when not recorded."""
    name = trial.user_attrs.get(VAL_BATCHES)
    return name if isinstance(name, str) and name else None


def rung_val_loss(trial: HasUserAttrs) -> Dict[int, float]:
    """{horizon step: decayed val loss} of each cooldown rung reached; empty without cooldown rungs."""
    return _per_step(trial.user_attrs.get(RUNG_VAL_LOSS), _float_or_none)


def stable_val_loss(trial: HasUserAttrs) -> Dict[int, float]:
    """{step: val loss} of a cooldown trial's stable phase; empty without cooldown rungs."""
    return _per_step(trial.user_attrs.get(STABLE_VAL_LOSS), _float_or_none)


def rung_steps(trial: HasUserAttrs) -> Optional[List[int]]:
    """The horizon steps of its rungs, shortest first; None when not recorded."""
    value = trial.user_attrs.get(RUNG_STEPS)
    try:
        return [int(s) for s in value] if isinstance(value, list) else None
    except (TypeError, ValueError):
        return None


def cooldown_tokens(trial: HasUserAttrs) -> int:
    """The tokens its cooldown branches trained; 0 without cooldown rungs."""
    value = _int_or_none(trial.user_attrs.get(COOLDOWN_TOKENS))
    return 0 if value is None else value


def status(trial: HasUserAttrs) -> Optional[str]:
    """How its training ended (``"completed"``, ``"stopped"``, ``"diverged"``); None before."""
    return trial.user_attrs.get(STATUS)


def stop_reason(trial: HasUserAttrs) -> Optional[str]:
    return trial.user_attrs.get(STOP_REASON)


def tokens_seen(trial: HasUserAttrs) -> Optional[int]:
    """The training tokens it ran; None when its training did not finish."""
    return _int_or_none(trial.user_attrs.get(TOKENS_SEEN))


def tokens_trained(trial: Any) -> int:
    """The training tokens the trial itself ran (a FrozenTrial): its ``tokens_seen``, else (it
    crashed or still runs) the step of its last report; less, for a retry or continuation, the
    step its earlier attempt's checkpoint had reached (those were trained, and are counted, there)."""
    seen = tokens_seen(trial)
    seen = int(max(trial.intermediate_values, default=0)) if seen is None else seen
    resumed = resumed_from(trial)
    return seen if resumed is None else max(0, seen - resumed["step"])


def num_params(trial: HasUserAttrs) -> Optional[int]:
    """Its model's parameters (the tied head once); None when its training did not finish."""
    return _int_or_none(trial.user_attrs.get(NUM_PARAMS))


def baseline(trial: HasUserAttrs) -> Optional[str]:
    """BASELINE_IN_SPACE or BASELINE_AS_GIVEN on the baseline trial; None on any other."""
    return trial.user_attrs.get(BASELINE_ATTR)


def is_baseline(trial: HasUserAttrs) -> bool:
    return bool(baseline(trial))


def retry_of(trial: HasUserAttrs) -> Optional[int]:
    """The first trial of the series this retry runs again; None if it is no retry."""
    return _int_or_none(trial.user_attrs.get(RETRY_OF))


def continues(trial: HasUserAttrs) -> Optional[int]:
    """The paused trial this continuation goes on from; None if it is no continuation."""
    return _int_or_none(trial.user_attrs.get(CONTINUES))


def paused_at_rung(trial: HasUserAttrs) -> Optional[int]:
    """The rung index at which the trial paused with its checkpoint kept; None if it did not."""
    return _int_or_none(trial.user_attrs.get(PAUSED_AT_RUNG))


def resumed_from(trial: HasUserAttrs) -> Optional[Dict[str, int]]:
    """{"trial": n, "step": s}: the attempt and step this retry continued from, or None."""
    value = trial.user_attrs.get(RESUMED_FROM)
    try:
        return {"trial": int(value["trial"]), "step": int(value["step"])}
    except (TypeError, KeyError, ValueError):
        return None


def out_of_memory(trial: HasUserAttrs) -> Optional[str]:
    """The out-of-memory error the trial recovered from by halving its micro-batch, or None."""
    value = trial.user_attrs.get(OUT_OF_MEMORY)
    return None if value is None else str(value)


# The reason of a FAIL trial that recorded none: every way a live worker ends a trial FAIL records
# one (sweeps.retries, sweeps.objective), so its worker died, and a heartbeat check failed it.
KILLED = "killed: its worker ({worker}) died without a word (SIGKILL, the kernel's OOM killer, a lost machine)"


# How the reason of a trial refused before training begins: it trained nothing, through no fault of
# its params (another worker took the study's last place, its config or continuation ran already).
NOT_RUN = "not run: "


def refused(trial: HasUserAttrs) -> bool:
    """Whether ``trial`` was refused before it trained (its fail reason begins with NOT_RUN)."""
    return str(trial.user_attrs.get(FAIL_REASON) or "").startswith(NOT_RUN)


def fail_reason(trial: HasUserAttrs) -> Optional[str]:
    """Why the FAIL trial ``trial`` ended: the reason it recorded; else, when it names its worker,
    that the worker was killed (KILLED); else None."""
    reason = trial.user_attrs.get(FAIL_REASON)
    if reason is None and getattr(getattr(trial, "state", None), "name", None) == "FAIL" and worker(trial):
        return KILLED.format(worker=worker(trial))
    return reason


def worker(trial: HasUserAttrs) -> Optional[str]:
    """The process that ran ``trial`` (``"<host> pid <pid>"``), or None."""
    value = trial.user_attrs.get(WORKER)
    return value if isinstance(value, str) else None


def replay_curve(trial: HasUserAttrs) -> int:
    """The index of the curve a bench replay trial replays."""
    return int(trial.user_attrs[REPLAY_CURVE])
