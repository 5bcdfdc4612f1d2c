"""The next step after a diagnosis: a sentence and a command ready to paste.

A study (`python study_runner.py +sweep=...`) is centred on the run's own config: its model, data
and batch as overrides, trials as long as the run was. A nanoGPT run gets nanoGPT commands where
nanoGPT can do the step (a shorter or re-decayed run, an eval on more batches), with its own
arguments as given; a study needs the parquet files its train.bin came from (`--data`), else the
command names them PARQUET_PLACEHOLDER.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass
from typing import List, Optional

from sweeps.diagnosis.causes import REPEAT_FRESH, Cause
from sweeps.diagnosis.curves import Curves
from sweeps.diagnosis.signals import Signals

PARQUET_PLACEHOLDER = "YOUR_DATA.parquet"
STUDY_EVALS = 20  # evaluations per trial of a suggested study


@dataclass
class NextStep:
    text: str
    command: Optional[str] = None


def _join(args: List[str]) -> str:
    return " ".join(shlex.quote(a) for a in args)


def _model(c: Curves) -> List[str]:
    m = c.cfg.model
    args = [f"model.n_layer={m.n_layer}", f"model.n_head={m.n_head}", f"model.n_embd={m.n_embd}",
            f"model.block_size={m.block_size}"]
    if m.bias:
        args.append("model.bias=true")
    if m.dropout:
        args.append(f"model.dropout={m.dropout}")
    if m.vocab_size != 50304:
        args.append(f"model.vocab_size={m.vocab_size}")
    return args


def _data(c: Curves) -> List[str]:
    if c.kind == "ours" and c.cfg.data.name == "sample":
        return ["data=sample"]
    files = c.data_files or [PARQUET_PLACEHOLDER]
    return ["data=parquet", f"data.files=[{','.join(files)}]"]


def _batch(c: Curves) -> List[str]:
    return [f"batch_size={c.cfg.batch_size}", f"gradient_accumulation_steps={c.cfg.gradient_accumulation_steps}"]


def _schedule(c: Curves) -> List[str]:
    s = c.cfg.schedule
    args = [f"schedule={s.name}", f"schedule.lr={s.lr:g}", f"schedule.min_lr={s.min_lr:g}",
            f"schedule.warmup_iters={s.warmup_iters}"]
    return args + [f"schedule.{k}=null" for k in ("min_lr_ratio", "warmup_fraction") if getattr(s, k) is not None]


def study(c: Curves, s: Signals, sweep: str, with_model: bool = True) -> str:
    iters = max(s.last_iter, 1)
    args = ["python", "study_runner.py", f"+sweep={sweep}", *(_model(c) if with_model else []), *_data(c),
            *_batch(c), f"schedule.max_iters={iters}", f"eval_interval={max(1, iters // STUDY_EVALS)}",
            f"eval_iters={c.cfg.eval_iters}", f"study.name={sweep}_{c.kind}_{iters}"]
    return _join(args)


def run(c: Curves, iters: int, *, decay_to_end: bool = False, **changes) -> str:
    """The same run with `iters` iterations (the LR decaying to its floor by the end when asked),
    and `changes` (nanoGPT names for a nanoGPT run, ours otherwise)."""
    if c.kind == "nanogpt":
        keep = [a for a in c.nanogpt_arguments
                if a.split("=")[0][2:] not in {"max_iters", "lr_decay_iters", "out_dir", *changes}]
        out_dir = next((a.split("=", 1)[1] for a in c.nanogpt_arguments if a.startswith("--out_dir=")), "out")
        extra = [f"--out_dir={out_dir}-next", f"--max_iters={iters}"] + (
            [f"--lr_decay_iters={iters}"] if decay_to_end else [])  # a new out_dir: the run's checkpoint stays
        return _join(["python", "train.py", *keep, *extra, *(f"--{k}={v}" for k, v in changes.items())])
    sched = _schedule(c)
    if decay_to_end:  # a constant LR becomes nanoGPT's cosine
        sched = (["schedule=cosine" if c.cfg.schedule.name == "constant" else sched[0]] + sched[1:]
                 + [f"schedule.lr_decay_iters={iters}"]
                 + (["schedule.lr_decay_fraction=null"] if c.cfg.schedule.lr_decay_fraction is not None else []))
    return _join(["python", "-m", "trainer", *_model(c), *_data(c), *_batch(c), *sched,
                  f"schedule.max_iters={iters}", *(f"{k}={v}" for k, v in changes.items())])


def next_step(cause: Optional[Cause], s: Signals, c: Curves) -> NextStep:
    placeholder = (f" (replace {PARQUET_PLACEHOLDER} with the parquet files your train.bin was made from, "
                   f"or pass them with --data)") if c.kind == "nanogpt" and not c.data_files else ""
    if cause is None:
        if s.val_drop_tail >= 0:
            return NextStep(f"No plateau to explain: val loss still fell {s.val_drop_tail:.3f} over the last "
                            f"quarter of the run and nothing was unstable; train longer.")
        return NextStep(f"No cause stands out: val loss rose {-s.val_drop_tail:.3f} over the last quarter of the "
                        f"run, which none of the causes above explains; evaluate with more eval_iters, or rerun "
                        f"with another seed, to see whether it is noise.")
    name = cause.name
    if name == "data_repetition":
        if c.unique_train_tokens is None:
            return NextStep(f"More data: this run needs about {math.ceil(s.tokens_seen / REPEAT_FRESH):,} unique "
                            f"training tokens to stay under {REPEAT_FRESH:g} epochs; count yours with "
                            f"--train-tokens, --train-bin or --data to size it.")
        tokens = math.ceil(s.tokens_seen / REPEAT_FRESH)
        iters = max(1, math.floor(REPEAT_FRESH * c.unique_train_tokens / c.tokens_per_iter))
        return NextStep(f"More data: {tokens:,} unique training tokens keeps this run under {REPEAT_FRESH:g} epochs "
                        f"(it has {c.unique_train_tokens:,}); or, on this data, a run of {iters:,} iterations "
                        f"({REPEAT_FRESH:g} epochs), its LR decayed by its end:",
                        run(c, iters, decay_to_end=True))
    if name in ("lr_too_high", "warmup_too_short"):
        return NextStep(f"A study of peak LR x warmup around your config (the sweep searches lr 1e-4 to 1e-2 and "
                        f"warmup up to 30% of the run; yours: lr {s.peak_lr:.3g}, warmup {s.warmup_iters}){placeholder}:",
                        study(c, s, "lr_warmup"))
    if name == "lr_still_high":
        iters = max(1, s.last_iter)
        return NextStep(f"Keep training: the LR still has {s.lr_share_left:.0%} of its decay ahead. To see now where "
                        f"this length ends, a run of the same {iters:,} iterations with the LR decayed by its end:",
                        run(c, iters, decay_to_end=True))
    if name == "min_lr_too_high":
        return NextStep(f"A study of the whole schedule (min_lr as a share of the peak, from 0.01) around your "
                        f"config{placeholder}:", study(c, s, "schedule"))
    if name == "capacity":
        return NextStep(f"A bigger model on the same data and batch: the model_size study (each preset with its LR)"
                        f"{placeholder}; on a GPU add model presets to its choice (conf/sweep/model_size.yaml):",
                        study(c, s, "model_size", with_model=False))
    if name == "data_quality":
        return NextStep(f"Check the text: train the same model on another, cleaner parquet for the same tokens and "
                        f"compare (replace {PARQUET_PLACEHOLDER}):",
                        _join(["python", "-m", "trainer", *_model(c), "data=parquet",
                               f"data.files=[{PARQUET_PLACEHOLDER}]", *_batch(c), f"schedule.max_iters={s.last_iter}"]))
    if name == "noise":
        needed = cause.evidence["eval_iters_needed"]
        if c.kind == "nanogpt":
            return NextStep(f"Evaluate the last checkpoint on {needed} batches (nanoGPT's eval_only):",
                            _join(["python", "train.py", *[a for a in c.nanogpt_arguments if not a.startswith(
                                ("--eval_iters=", "--init_from=", "--eval_only="))],
                                   "--init_from=resume", "--eval_only=True", f"--eval_iters={needed}"]))
        return NextStep(f"Run it again evaluating on {needed} batches, so a change of the size train shows is "
                        f"beyond noise:", run(c, max(1, s.last_iter), eval_iters=needed))
    raise ValueError(f"no next step for cause {name!r}")
