"""The end-of-study table: best trials, states, compute used and saved, gain over the baseline."""

from __future__ import annotations

import optuna
from optuna.trial import TrialState

from sweeps import trial_record


def _fmt_params(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def compute_of(study: optuna.Study) -> tuple[int, int]:
    """(training tokens used by all trials, tokens pruning and early stopping saved)."""
    used = saved = 0
    for t in study.get_trials(deepcopy=False):
        seen = trial_record.tokens_seen(t)
        seen = int(max(t.intermediate_values, default=0)) if seen is None else seen
        used += seen
        if t.state == TrialState.PRUNED or trial_record.status(t) == "stopped":
            budget = trial_record.budget_step(t)
            saved += max(0, (seen if budget is None else budget) - seen)
    return used, saved


def study_report(study: optuna.Study, top: int = 5) -> str:
    trials = study.get_trials(deepcopy=False)
    lines = [f"study {study.study_name!r}: {len(trials)} trials"]
    counts = {s.name: sum(t.state == s for t in trials) for s in TrialState}
    lines.append("states: " + ", ".join(f"{n} {c}" for n, c in counts.items() if c))
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    if complete:
        lines.append(f"{'trial':>5}  {'val loss':>8}  {'stop reason':<28}  params")
        for t in complete[:top]:
            mark = f" (baseline, {trial_record.baseline(t)})" if trial_record.is_baseline(t) else ""
            reason = str(trial_record.stop_reason(t) or "")[:28]
            lines.append(f"{t.number:>5}  {t.value:>8.4f}  {reason:<28}  {_fmt_params(t.params)}{mark}")
    used, saved = compute_of(study)
    if used:
        lines.append(f"compute: {used:,} training tokens used; pruning and early stops saved {saved:,} "
                     f"({saved / (used + saved):.0%} of what running every trial to the end would cost)")
    baseline = next((t for t in complete if trial_record.is_baseline(t)), None)
    if baseline is not None and complete[0] is baseline:
        lines.append(f"no trial beat the baseline (trial {baseline.number}, val loss {baseline.value:.4f})")
    elif baseline is not None:
        best = complete[0]
        lines.append(f"gain over the baseline (trial {baseline.number}, val loss {baseline.value:.4f}): "
                     f"{baseline.value - best.value:+.4f} with trial {best.number}")
    elif complete:
        lines.append("no completed baseline trial to compare with")
    return "\n".join(lines)
