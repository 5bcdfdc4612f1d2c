"""The end-of-study text table: best trials, states, compute used and saved, gain over the baseline."""

from __future__ import annotations

import optuna

from sweeps import trial_record
from sweeps.report import fmt
from sweeps.report.facts import StudyFacts, facts_of


def gain_line(facts: StudyFacts) -> str:
    """One sentence: the best trial against the baseline, in val loss and in training tokens."""
    best, baseline = facts.best, facts.baseline
    if best is None:
        return "no complete trial yet"
    if baseline is None:
        return "no completed baseline trial to compare with"
    if best is baseline:
        return f"no trial beat the baseline (trial {baseline.number}, val loss {baseline.value:.4f})"
    line = (f"gain over the baseline (trial {baseline.number}, val loss {baseline.value:.4f}): "
            f"{baseline.value - best.value:+.4f} with trial {best.number}")
    if facts.gain is not None:
        g = facts.gain
        line += (f"; it reached the baseline's val loss after {fmt.tokens(g.best_tokens)} training tokens, "
                 f"{fmt.share(g.share)} of the baseline's {fmt.tokens(g.baseline_tokens)}")
    return line


def compute_line(facts: StudyFacts) -> str:
    total = facts.used + facts.saved
    return (f"compute: {facts.used:,} training tokens used; pruning and early stops saved {facts.saved:,} "
            f"({facts.saved / total:.0%} of what running every trial to the end would cost)")


def study_report(study: optuna.Study, top: int = 5) -> str:
    facts = facts_of(study, top_k=top)
    lines = [f"study {facts.name!r}: {len(facts.trials)} trials"]
    lines.append("states: " + ", ".join(f"{n} {c}" for n, c in facts.counts.items()))
    if facts.promotions_line:
        lines.append(facts.promotions_line)
    if facts.complete:
        lines.append(f"{'trial':>5}  {'val loss':>8}  {'stop reason':<28}  params")
        for t in facts.top:
            mark = f" (baseline, {trial_record.baseline(t)})" if trial_record.is_baseline(t) else ""
            reason = str(trial_record.stop_reason(t) or "")[:28]
            lines.append(f"{t.number:>5}  {t.value:>8.4f}  {reason:<28}  {fmt.params(t.params)}{mark}")
    if facts.used:
        lines.append(compute_line(facts))
    if facts.complete:
        lines.append(gain_line(facts))
    return "\n".join(lines)
