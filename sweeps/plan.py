"""`mode=plan`: what a study will cost, printed in seconds before anything trains.

Nothing is trained and no study or database is created: the plan reads the sweep, composes the
trials that bound its size (every choice, and both ends of every range, of the params that change
a trial's model, batch, length, dtype or data) and reads the data's token count from the cache
(tokenizing it once if it is not there yet, as the sweep would). It prints:

- the resolved search space;
- per trial: iterations, tokens, epochs of the unique training tokens, parameters and FLOPs
  (a range where the space varies them);
- the study's total tokens and FLOPs (training: `trainer.flops_per_token`, 6N plus attention;
  evaluation: a third of that per token, forward only) for `study.n_trials` trials before pruning
  saves any, and the hours they take at `plan.mfu` of the target GPU's peak;
- per model and micro-batch, the peak memory of a training step on the target GPU
  (`trainer.step_memory`: weights, grads, AdamW states, activations, logits), which configs do not
  fit in `plan.gpu_mem_gb` and the largest micro-batch that does;
- the horizon: a trial's tokens as a share of the intended long run's (`plan.long_run_iters`
  iterations at the baseline's tokens per iteration), with a warning under HORIZON_WARNING.

The target GPU is the visible one; without one, NO_GPU_TARGET (the 12 GB card of the run this
tool was built for); `plan.gpu_mem_gb` and `plan.gpu_tflops` set another. A sweep prints the same
plan in short (`short_plan`) before its first trial.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Any, Optional

import torch
from omegaconf import DictConfig
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from sweeps.compose import Composer, group_choices, require_sweep, search_space_of, study_name_of
from sweeps.config import PlanConfig, StudyError, check_plan, check_study
from sweeps.cooldown import rungs_of, trained_iters
from sweeps.search_space import SearchSpace, check_values_allowed, format_value
from trainer import (CUDA_RESERVED_BYTES, ConfigError, DataError, PreparedData, TrainConfig, as_train_config, check_config, eval_points,
                     flops_per_token, gpu_peak_flops, largest_micro_batch, num_params, prepare_data,
                     step_memory, tokens_per_iter)

NO_GPU_TARGET = ("NVIDIA GeForce RTX 4070", 12.0)  # name (its peak: trainer.GPU_PEAK_TFLOPS), GiB
HORIZON_WARNING = 1 / 20  # trials trained on less than this share of the long run's tokens are warned of
# Keys whose value changes what a trial costs; a config group may change anything.
SIZE_KEYS = ("model", "data", "batch_size", "gradient_accumulation_steps", "schedule.max_iters", "dtype")
MAX_CORNERS = 256  # trials composed to bound the space; beyond this the plan samples the first ones
GIB = 2 ** 30


@dataclass(frozen=True)
class Target:
    name: str
    memory_bytes: float
    peak_flops: Optional[float]  # None: unknown, so no hours
    note: str  # where the figures come from


@dataclass(frozen=True)
class TrialSize:
    """One bounding trial: what it trains and what that costs."""

    label: str  # the values that make it this size ("model=mini batch_size=16"), or "every trial"
    cfg: TrainConfig
    iters: int
    tokens: int
    epochs: float
    unique_tokens: int  # of the trial's training data
    params: int
    train_flops: float
    eval_flops: float


@dataclass(frozen=True)
class Plan:
    study_name: str
    n_trials: int
    space: SearchSpace
    written: dict  # the sweep's params as written (a conditional one with its condition)
    sizes: list  # of TrialSize; several when the space varies a trial's size
    impossible: list  # labels of bounding trials whose config cannot run
    unbounded: int  # bounding trials left out past MAX_CORNERS
    target: Target
    long_run_iters: int
    mfu: float


# ----------------------------------------------------------------------------- building

def _target(plan: PlanConfig) -> Target:
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        memory = torch.cuda.get_device_properties(0).total_memory
        note = "the visible GPU"
    else:
        name, memory = NO_GPU_TARGET[0], NO_GPU_TARGET[1] * GIB
        note = "no GPU is visible here"
    peak = gpu_peak_flops(name)
    if plan.gpu_mem_gb is not None:
        memory, note = plan.gpu_mem_gb * GIB, note + "; plan.gpu_mem_gb"
    if plan.gpu_tflops is not None:
        peak, note = plan.gpu_tflops * 1e12, note + "; plan.gpu_tflops"
    return Target(name, memory, peak, note)


def _sizes_key(key: str, space: SearchSpace) -> bool:
    return key in space.groups or any(key == k or key.startswith(k + ".") for k in SIZE_KEYS)


def _ends(dist) -> list:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    assert isinstance(dist, (IntDistribution, FloatDistribution))
    return [dist.low] if dist.low == dist.high else [dist.low, dist.high]


def bounding_points(space: SearchSpace) -> list[dict]:
    """The values of the size-changing params at every combination of their choices and ends;
    [{}] when the space changes no trial's size."""
    keys = [k for k in space.distributions if _sizes_key(k, space)]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(_ends(space.distributions[k]) for k in keys))]


def _label(point: dict) -> str:
    return " ".join(f"{k}={format_value(v)}" for k, v in point.items())


def _unsaid(line: str) -> None:
    pass


def _size(label: str, cfg: TrainConfig, unique_tokens: int, rungs=None) -> TrialSize:
    """A trial's size; with cooldown `rungs` (study.fidelity=cooldown) its tokens are those of a
    trial that reaches the last rung, its branches included."""
    per_iter = tokens_per_iter(cfg)
    iters = cfg.schedule.max_iters if rungs is None else trained_iters(
        rungs_of(cfg.schedule.max_iters, rungs.count, rungs.eta, rungs.cooldown_fraction))
    tokens = iters * per_iter
    eval_tokens = len(eval_points(cfg)) * 2 * cfg.eval_iters * cfg.batch_size * cfg.model.block_size
    per_token = flops_per_token(cfg.model)
    return TrialSize(label, cfg, iters, tokens, tokens / unique_tokens, unique_tokens,
                     num_params(cfg.model, non_embedding=False), float(per_token) * tokens,
                     per_token / 3 * eval_tokens)


def build_plan(cfg: DictConfig, overrides: list[str], data: Optional[PreparedData] = None) -> Plan:
    """The plan of the study `cfg` describes; StudyError (or the trainer's ConfigError) for settings
    that cannot run, as `mode=sweep` would raise them. `data`: the study's data, when the caller
    has prepared it already (a sweep has: its cache is not checked a second time)."""
    require_sweep(cfg)
    check_study(cfg.study)
    check_plan(cfg.plan)
    name = study_name_of(cfg)
    baseline = as_train_config(cfg)
    check_config(baseline)
    space = search_space_of(cfg)  # its conditional params (sweep.when) too
    check_values_allowed(space, cfg)
    compose = Composer(overrides)
    base_model = group_choices(overrides).get("model", "custom")
    prepared: dict = {} if data is None else {repr(baseline.data): data}  # data config -> its PreparedData
    sizes, impossible = [], []
    points = bounding_points(space)
    for point in points[:MAX_CORNERS]:
        trial_cfg = as_train_config(compose(space.to_overrides(point))) if point else baseline
        label = _label({"model": base_model, **point})
        try:
            check_config(trial_cfg)
        except ConfigError as e:
            impossible.append(f"{label}: {e}")
            continue
        data_key = repr(trial_cfg.data)
        if data_key not in prepared:
            prepared[data_key] = prepare_data(trial_cfg.data, log=_unsaid)  # the plan states the count itself
        try:
            prepared[data_key].check_fits(trial_cfg.model.block_size)
        except DataError as e:
            impossible.append(f"{label}: {e}")
            continue
        sizes.append(_size(label, trial_cfg, prepared[data_key].train.num_tokens,
                           cfg.study.rungs if cfg.study.fidelity == "cooldown" else None))
    if not sizes:
        raise StudyError(f"no trial of the sweep can run: {'; '.join(impossible)}")
    written = {**cfg.sweep.params, **{k: f"{v}, only where {c}" for c, branch in cfg.sweep.when.items()
                                      for k, v in branch.items()}}
    return Plan(name, cfg.study.n_trials, space, written, sizes, impossible,
                max(0, len(points) - MAX_CORNERS), _target(cfg.plan),
                cfg.plan.long_run_iters, cfg.plan.mfu)


# ----------------------------------------------------------------------------- reading it

def _span(values, fmt) -> str:
    low, high = min(values), max(values)
    return fmt(low) if fmt(low) == fmt(high) else f"{fmt(low)} .. {fmt(high)}"


def _si(x: float) -> str:
    for unit, scale in (("E", 1e18), ("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def _describe(key: str, dist, written: Any) -> str:
    if isinstance(dist, CategoricalDistribution):
        choices = ", ".join(format_value(c) for c in dist.choices)
        return f"fixed at {choices}" if len(dist.choices) == 1 else f"one of {choices}"
    scale = "log scale, " if dist.log else ""
    step = f", step {format_value(dist.step)}" if getattr(dist, "step", None) not in (None, 1) else ""
    kind = "integers" if isinstance(dist, IntDistribution) else "floats"
    return f"{kind} {scale}{format_value(dist.low)} .. {format_value(dist.high)}{step}  ({written})"


def _half(cfg: TrainConfig) -> bool:
    """Whether the run's matmuls are bf16/fp16 on a GPU (dtype=auto picks one there)."""
    return cfg.dtype != "float32"


@dataclass(frozen=True)
class MemoryRow:
    label: str
    batch_size: int
    dtype: str
    peak: int
    parts: dict
    largest: int


def memory_rows(plan: Plan) -> list[MemoryRow]:
    """One row per distinct model, micro-batch and dtype among the bounding trials, on the target."""
    budget = plan.target.memory_bytes - CUDA_RESERVED_BYTES
    rows, seen = [], set()
    for size in plan.sizes:
        cfg = size.cfg
        key = (repr(cfg.model), cfg.batch_size, _half(cfg))
        if key in seen:
            continue
        seen.add(key)
        est = step_memory(cfg.model, cfg.batch_size, _half(cfg), "cuda")
        parts = {"weights": est.weights, "grads": est.grads, "AdamW": est.optimizer,
                 "activations": est.activations + est.weight_copies, "logits": est.logits}
        rows.append(MemoryRow(size.label, cfg.batch_size, "bf16/fp16" if _half(cfg) else "fp32", est.peak, parts,
                              largest_micro_batch(cfg.model, _half(cfg), "cuda", budget)))
    return rows


def horizon(plan: Plan) -> tuple[float, float]:
    """(smallest, largest) share of the long run's tokens a trial trains on; the long run is a trial's
    config trained for `plan.long_run_iters` iterations, as mode=best re-runs the best trial."""
    shares = [s.iters / plan.long_run_iters for s in plan.sizes]
    return min(shares), max(shares)


def _hours(plan: Plan, flops: float) -> Optional[float]:
    if plan.target.peak_flops is None:
        return None
    return flops / (plan.mfu * plan.target.peak_flops) / 3600


def _not_fit_lines(plan: Plan, rows: list) -> list[str]:
    budget = plan.target.memory_bytes - CUDA_RESERVED_BYTES
    lines = []
    for r in rows:
        if r.peak <= budget:
            continue
        size = next(s for s in plan.sizes if s.label == r.label)
        per_step = size.cfg.gradient_accumulation_steps * r.batch_size  # sequences an iteration trains
        even = max(k for k in range(1, max(r.largest, 1) + 1) if per_step % k == 0)
        fix = (f"the largest micro-batch that fits is {r.largest}; batch_size={even} "
               f"gradient_accumulation_steps={per_step // even} keeps the tokens per iteration"
               if r.largest else "not even batch_size=1 fits: pick a smaller model or a GPU with more memory")
        lines.append(f"DOES NOT FIT: {r.label} at batch_size={r.batch_size} ({r.dtype}) needs {r.peak / GIB:.1f} GiB "
                     f"of {budget / GIB:.1f} usable on {plan.target.name}; {fix}")
    return lines


def _horizon_line(plan: Plan) -> tuple[str, Optional[str]]:
    low, high = horizon(plan)
    iters = _span([s.iters for s in plan.sizes], lambda x: f"{x:,}")
    line = (f"horizon: a trial trains {iters} iterations, {_span([low, high], _share)} of the tokens of the "
            f"long run (plan.long_run_iters={plan.long_run_iters:,} iterations of the trial's config, as "
            f"mode=best re-runs the best one)")
    warning = None
    if high < HORIZON_WARNING:
        warning = (f"WARNING: trials train on under 1/{round(1 / HORIZON_WARNING)} of the long run's tokens: the "
                   f"best LR at a short horizon is often not the best at a long one; lengthen the trials "
                   f"(schedule.max_iters) or plan a shorter long run (plan.long_run_iters)")
    return line, warning


def _share(x: float) -> str:
    return f"1/{1 / x:.0f}" if 0 < x < 1 else f"{x:.2f}x"


def format_plan(plan: Plan) -> str:
    s = plan.sizes
    lines = [f"plan of study {plan.study_name!r}: {plan.n_trials} trials (nothing trained, no study created)", "",
             f"search space ({len(plan.space.distributions)} params):"]
    width = max((len(k) for k in plan.space.distributions), default=0)
    for key, dist in plan.space.distributions.items():
        lines.append(f"  {key:<{width}}  {_describe(key, dist, plan.written.get(key))}")
    first = s[0].cfg
    lines += ["", "per trial" + (f" (over {len(s)} bounding trials: every choice and both ends of each "
                                 f"range that changes a trial's size)" if len(s) > 1 else "") + ":",
              f"  iterations   {_span([x.iters for x in s], lambda v: f'{v:,}')}",
              f"  tokens       {_span([x.tokens for x in s], lambda v: f'{v:,}')}"
              + (f" = iterations x {tokens_per_iter(first):,} (batch {first.batch_size} x accumulation "
                 f"{first.gradient_accumulation_steps} x block {first.model.block_size})" if len(s) == 1 else ""),
              f"  epochs       {_span([x.epochs for x in s], lambda v: f'{v:.3g}')} of {_span([x.unique_tokens for x in s], lambda v: f'{v:,}')} unique training tokens"
              + ("  (WARNING: repeats its data)" if max(x.epochs for x in s) > 1 else ""),
              f"  parameters   {_span([x.params for x in s], lambda v: f'{v / 1e6:.2f}M')}",
              f"  FLOPs        {_span([x.train_flops for x in s], _si)} training + "
              f"{_span([x.eval_flops for x in s], _si)} evaluation"]
    for reason in plan.impossible:
        lines.append(f"  cannot run (such trials FAIL): {reason}")
    if plan.unbounded:
        lines.append(f"  WARNING: {plan.unbounded} more combinations of size-changing values are left out "
                     f"(the plan composes at most {MAX_CORNERS})")
    total = [plan.n_trials * (x.train_flops + x.eval_flops) for x in s]
    hours = [_hours(plan, f) for f in total]
    peak = plan.target.peak_flops
    lines += ["", f"study ({plan.n_trials} trials, before pruning saves any):",
              f"  tokens       {_span([plan.n_trials * x.tokens for x in s], lambda v: f'{v:,}')}",
              f"  FLOPs        {_span(total, _si)}",
              "  hours        " + (f"{_span(hours, lambda v: f'{v:.3g}')} at {plan.mfu:.0%} MFU of "
                                    f"{peak / 1e12:g} TFLOPS ({plan.target.name}; {plan.target.note})"
                                    if peak else f"unknown: no peak is known for {plan.target.name}; "
                                                 f"set plan.gpu_tflops")]
    rows = memory_rows(plan)
    budget = plan.target.memory_bytes - CUDA_RESERVED_BYTES
    lines += ["", f"memory of a training step on {plan.target.name}, {plan.target.memory_bytes / GIB:.1f} GiB "
                  f"({budget / GIB:.1f} usable: {CUDA_RESERVED_BYTES / GIB:g} GiB go to the CUDA context and the "
                  f"allocator), eager PyTorch (torch.compile usually needs less), GiB:"]
    label_w = max(len(r.label) for r in rows)
    lines.append(f"  {'trial':<{label_w}}  {'batch':>5}  {'dtype':<9}  {'weights':>7}  {'grads':>5}  {'AdamW':>5}  "
                 f"{'activ.':>6}  {'logits':>6}  {'peak':>5}  fits  largest batch that fits")
    for r in rows:
        p = {k: v / GIB for k, v in r.parts.items()}
        lines.append(f"  {r.label:<{label_w}}  {r.batch_size:>5}  {r.dtype:<9}  {p['weights']:>7.2f}  {p['grads']:>5.2f}  "
                     f"{p['AdamW']:>5.2f}  {p['activations']:>6.2f}  {p['logits']:>6.2f}  {r.peak / GIB:>5.2f}  "
                     f"{'yes ' if r.peak <= budget else 'NO  '}  {r.largest}")
    lines.append("  (peak: weights and AdamW states plus the larger of the forward's tensors at the start of "
                 "backward and the grads at the step)")
    lines += _not_fit_lines(plan, rows)
    horizon_line, warning = _horizon_line(plan)
    lines += ["", horizon_line] + ([warning] if warning else [])
    return "\n".join(lines)


def short_plan(plan: Plan) -> str:
    """The plan in a few lines, for a sweep's start."""
    s = plan.sizes
    total = [plan.n_trials * (x.train_flops + x.eval_flops) for x in s]
    hours = [_hours(plan, f) for f in total]
    at = (f", {_span(hours, lambda v: f'{v:.2g}')} h at {plan.mfu:.0%} MFU of {plan.target.name}"
          if plan.target.peak_flops else "")
    lines = [f"plan: {plan.n_trials} trials of {_span([x.iters for x in s], lambda v: f'{v:,}')} iterations, "
             f"{_span([x.tokens for x in s], lambda v: f'{v:,}')} tokens "
             f"({_span([x.epochs for x in s], lambda v: f'{v:.3g}')} epochs) each; "
             f"{_span([plan.n_trials * x.tokens for x in s], _si)} tokens, {_span(total, _si)}FLOP in all{at}"]
    if max(x.epochs for x in s) > 1:
        lines.append(f"WARNING: trials repeat their training data up to {max(x.epochs for x in s):.1f} times")
    rows = memory_rows(plan)
    lines += _not_fit_lines(plan, rows) or [
        f"memory: every trial fits on {plan.target.name} (peak {max(r.peak for r in rows) / GIB:.2f} GiB)"]
    horizon_line, warning = _horizon_line(plan)
    lines += [horizon_line] + ([warning] if warning else [])
    lines.append("(mode=plan prints the whole plan)")
    return "\n".join(lines)


def run_plan(cfg: DictConfig, overrides: list[str]) -> Plan:
    """`mode=plan`: print the study's plan; nothing trains and no storage is opened."""
    plan = build_plan(cfg, overrides)
    print(format_plan(plan))
    return plan
