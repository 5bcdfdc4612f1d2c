"""Why did a run's loss plateau: a diagnosis of a run dir of ours, a study's trial, or a nanoGPT log.

    diagnose_run_dir(path)                                  a run dir of `python -m trainer` or a trial
    diagnose_trial(frozen_trial)                            a study's trial (its run dir from its user attrs)
    diagnose_nanogpt_log(path, settings, train_tokens)      nanoGPT's console output; `settings` its
                                                            train.py settings as given (nanoGPT names)

Each returns a `Diagnosis`: `.causes` ranked (name, confidence, evidence), `.text()` for the
console, `.markdown()` for a report. The modules: `curves` reads, `signals` measures, `causes`
weighs (the rules are its docstring), `next_step` says what to run next, `verdict` words it.
Bad input raises `DiagnosisError`, one line saying what to pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from sweeps.diagnosis import curves as _curves
from sweeps.diagnosis import nanogpt
from sweeps.diagnosis.causes import Cause, weigh
from sweeps.diagnosis.errors import DiagnosisError
from sweeps.diagnosis.next_step import NextStep, next_step
from sweeps.diagnosis.signals import measure
from sweeps.diagnosis.verdict import MIN_CONFIDENCE, Diagnosis

__all__ = ["Cause", "Diagnosis", "DiagnosisError", "NextStep", "diagnose", "diagnose_nanogpt_log",
           "diagnose_run_dir", "diagnose_trial"]

MIN_EVALS = 3


def diagnose(c: _curves.Curves) -> Diagnosis:
    """The diagnosis of curves read by any of the readers."""
    if len(c.evals) < MIN_EVALS:
        raise DiagnosisError(f"{c.source}: {len(c.evals)} evaluation(s); the diagnosis needs at least {MIN_EVALS} "
                             f"(evaluate more often: eval_interval, nanoGPT's --eval_interval)")
    s = measure(c)
    causes = weigh(s, c)
    lead = causes[0] if causes[0].confidence >= MIN_CONFIDENCE else None
    summary = {"iters": s.last_iter, "tokens_seen": s.tokens_seen, "epochs": s.epochs,
               "unique_train_tokens": c.unique_train_tokens, "num_params": c.num_params,
               "tokens_per_param": s.tokens_per_param, "val_end": s.val_end, "val_best": s.val_min,
               "val_best_iter": s.val_min_iter}
    return Diagnosis(source=c.source, causes=causes, next_step=next_step(lead, s, c), summary=summary,
                     assumed={k: v for k, v in c.assumed.items() if v}, notes=list(c.notes))


def diagnose_run_dir(path) -> Diagnosis:
    return diagnose(_curves.read_run_dir(Path(path)))


def diagnose_trial(frozen_trial: Any) -> Diagnosis:
    return diagnose(_curves.read_trial(frozen_trial))


def diagnose_nanogpt_log(path, settings: Optional[Dict[str, Any]] = None, train_tokens: Optional[int] = None, *,
                         config_file: Optional[Path] = None, data_files: Optional[List[str]] = None) -> Diagnosis:
    """`settings`: nanoGPT train.py settings by its names ({"batch_size": 16, ...}), as given to it
    (a config file's too, or pass `config_file`); what none gives is nanoGPT's default, said so."""
    log = nanogpt.read_log(Path(path))
    arguments = [f"--{k}={v}" for k, v in (settings or {}).items()]
    found = nanogpt.settings_of(log, config_file, arguments)
    return diagnose(_curves.read_nanogpt(Path(path), found, log, train_tokens, list(data_files or [])))
