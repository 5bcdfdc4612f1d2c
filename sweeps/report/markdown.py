"""The report as sections of Markdown, each with its figures; :data:`SECTIONS` lists them in
order, so another section (a diagnosis, say) is one more builder in that list."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Optional, Tuple

from matplotlib.figure import Figure
from optuna.trial import FrozenTrial, TrialState

from sweeps import trial_record
from sweeps.diagnosis import DiagnosisError, diagnose_trial
from sweeps.report import fmt, plots
from sweeps.report.facts import MIN_IMPORTANCE_TRIALS, StudyFacts
from sweeps.report.table import compute_line, gain_line


@dataclass
class Section:
    """A part of report.md: a ``## title``, Markdown ``text``, then each figure as
    (file name, figure, caption), saved beside report.md and shown below the text."""

    title: str
    text: str
    figures: List[Tuple[str, Figure, str]] = field(default_factory=list)


SectionBuilder = Callable[[StudyFacts], Optional[Section]]


def _figure(name: str, figure: Optional[Figure], caption: str) -> List[Tuple[str, Figure, str]]:
    return [] if figure is None else [(name, figure, caption)]


def summary(facts: StudyFacts) -> str:
    """The answer in a few lines of Markdown: the best trial, its gain over the baseline in val
    loss and in tokens, its params, the states and the compute. Also the study's note."""
    lines = [f"**{gain_line(facts)}.**", ""]
    if facts.best is not None:
        best = facts.best
        lines.append(f"- best: trial {best.number}, val loss {best.value:.4f}, "
                     f"{fmt.params(best.params) or 'the config as given'}")
    if facts.baseline is not None:
        base = facts.baseline
        lines.append(f"- baseline: trial {base.number}, val loss {base.value:.4f} "
                     f"({trial_record.baseline(base)}), {fmt.params(base.params) or 'the config as given'}")
    if facts.gain is not None:
        lines.append(f"- gain in tokens: the best reached the baseline's val loss {facts.gain.target:.4f} after "
                     f"{facts.gain.best_tokens:,} training tokens, {fmt.share(facts.gain.share)} of the "
                     f"{facts.gain.baseline_tokens:,} the baseline needed (first evaluation at or below it)")
    lines.append(f"- trials: {len(facts.trials)} ({', '.join(f'{c} {n}' for n, c in facts.counts.items())})")
    if facts.promotions_line:
        lines.append(f"- {facts.promotions_line}")
    if facts.used:
        lines.append(f"- {compute_line(facts)}")
    return "\n".join(lines)


def top_table(facts: StudyFacts) -> str:
    """The top-k complete trials as a Markdown table, best first."""
    rows = ["| rank | trial | val loss | vs baseline | tokens trained | stop reason | params |",
            "|---:|---:|---:|---:|---:|---|---|"]
    for rank, t in enumerate(facts.top, 1):
        vs = "" if facts.baseline is None else f"{t.value - facts.baseline.value:+.4f}"
        mark = " (baseline)" if trial_record.is_baseline(t) else ""
        used, _ = facts.per_trial_compute[t.number]
        rows.append(f"| {rank} | {t.number}{mark} | {t.value:.4f} | {vs} | {fmt.tokens(used)} | "
                    f"{trial_record.stop_reason(t) or ''} | {fmt.params(t.params) or 'as given'} |")
    return "\n".join(rows)


def answer_section(facts: StudyFacts) -> Section:
    return Section("The answer", summary(facts), _figure(
        "curves.png", plots.curves_figure(facts),
        "val loss against training tokens for every trial; best and baseline highlighted, pruned trials faded"))


def best_vs_baseline_section(facts: StudyFacts) -> Optional[Section]:
    figure = plots.best_vs_baseline_figure(facts)
    if figure is None:
        return None
    text = ("The best trial against the baseline, each evaluation with its standard error. The gain is "
            "counted in training tokens: the tokens the best trial needed to reach the baseline's final "
            "val loss, against those the baseline needed.")
    return Section("Best trial vs the baseline", text, _figure("best_vs_baseline.png", figure,
                                                               "best trial vs baseline"))


def top_section(facts: StudyFacts) -> Optional[Section]:
    if not facts.complete:
        return None
    return Section(f"Top {len(facts.top)} trials", top_table(facts))


def importance_section(facts: StudyFacts) -> Section:
    imp = facts.importances
    if imp.why is None:
        text = (f"fANOVA (Optuna's FanovaImportanceEvaluator) over the {imp.n_trials} complete sampled trials "
                f"(pruned trials have no final val loss, so they do not count): "
                + ", ".join(f"{k} {v:.2f}" for k, v in imp.values.items()) + ".")
    else:
        text = f"No importances: {imp.why} (fANOVA uses complete trials; at least {MIN_IMPORTANCE_TRIALS})."
    figures = _figure("importance.png", plots.importance_figure(facts), "fANOVA importance of each param")
    figures += _figure("top_params.png", plots.top_params_figure(facts),
                       "val loss over the two most important params")
    return Section("Which params mattered", text, figures)


def compute_section(facts: StudyFacts) -> Optional[Section]:
    if not facts.used:
        return None
    text = (f"{compute_line(facts)}. Saved: each pruned or early-stopped trial's planned budget minus "
            f"the tokens it ran.")
    return Section("Compute used and saved by pruning", text, _figure(
        "compute.png", plots.compute_figure(facts), "training tokens per trial, used and saved"))


def failures_section(facts: StudyFacts) -> Optional[Section]:
    """Each FAIL trial with its reason, so a sweep that lost trials says why."""
    failed = [t for t in facts.trials if t.state == TrialState.FAIL]
    if not failed:
        return None
    lines = [f"- trial {t.number}: {trial_record.fail_reason(t) or 'no reason recorded (see the run log)'}"
             for t in failed]
    return Section(f"Failed trials ({len(failed)})", "\n".join(lines))


def _diagnosis_of(trial: FrozenTrial) -> str:
    try:
        return diagnose_trial(trial).markdown()
    except (DiagnosisError, OSError) as e:  # its run dir moved or was deleted: say so, report the rest
        return f"_no diagnosis: {e}_"


def diagnosis_section(facts: StudyFacts) -> Optional[Section]:
    """Why the best trial and the baseline ended where they did (sweeps.diagnose), each with
    its evidence and the command to run next."""
    if facts.best is not None and trial_record.rung_val_loss(facts.best):
        return Section("Why each plateaued: the diagnosis", (
            "Not for cooldown trials: the diagnosis reads a run's whole schedule, and a cooldown trial is a "
            "constant-LR stable phase with short decayed branches. Diagnose the best trial's long run instead: "
            "`mode=best`, then `python -m sweeps.diagnose outputs/studies/NAME/best_run`."))
    shown = [(f"Best trial {facts.best.number}", facts.best)] if facts.best is not None else []
    if facts.baseline is not None and facts.baseline is not facts.best:
        shown.append((f"Baseline, trial {facts.baseline.number}", facts.baseline))
    if not shown:
        return None
    text = "\n\n".join(f"### {title}\n\n{_diagnosis_of(trial)}" for title, trial in shown)
    return Section("Why each plateaued: the diagnosis", text)


def rungs_section(facts: StudyFacts) -> Optional[Section]:
    """A cooldown study's trials ranked by their long run's predicted loss, beside what they
    measured: the decayed val loss at the last rung each reached."""
    with_rungs = [t for t in facts.trials if trial_record.rung_val_loss(t)]
    if not with_rungs:
        return None
    text = [f"Every value of this study is a decayed val loss: the loss after a cooldown to min_lr from the "
            f"trial's stable phase at a rung (study.fidelity=cooldown), never a point of its constant-LR curve. "
            f"{len(with_rungs)} trials reached a rung."]
    if facts.predictions:
        tokens = next(iter(facts.predictions.values())).tokens
        text.append(f"\nRanked by the loss predicted for the long run (plan.long_run_iters={facts.long_run_iters:,} "
                    f"iterations of each trial's config, {tokens:,} tokens for the first ranked), fit to each trial's rungs as "
                    f"L(D) = E + A * D^-alpha, with a 95% interval:\n")
        text.append("| rank | trial | state | predicted long run | last rung: decayed val loss | rungs | trusted | params |")
        text.append("|---:|---:|---|---|---|---:|---|---|")
        ranked = sorted(facts.predictions.items(), key=lambda kv: kv[1].loss)
        by_number = {t.number: t for t in facts.trials}
        for rank, (number, p) in enumerate(ranked, 1):
            t = by_number[number]
            rungs = trial_record.rung_val_loss(t)
            last = max(rungs)
            text.append(f"| {rank} | {number} | {t.state.name} | {p.loss:.4f} [{p.low:.4f}, {p.high:.4f}] | "
                        f"{rungs[last]:.4f} at {last:,} tokens | {len(rungs)} | {'yes' if p.trusted else 'no'} | "
                        f"{fmt.params(t.params) or 'the config as given'} |")
        doubts = sorted({d for p in facts.predictions.values() for d in p.doubts})
        if doubts:
            text.append("\nWhy some predictions are not to be trusted:\n")
            text += [f"- {d}" for d in doubts]
    else:
        text.append("No trial reached three rungs, so no long run is predicted (a power law has three parameters).")
    return Section("Cooldown rungs and the long run predicted", "\n".join(text))


SECTIONS: List[SectionBuilder] = [answer_section, best_vs_baseline_section, rungs_section, diagnosis_section,
                                  top_section, importance_section, compute_section, failures_section]


def build_sections(facts: StudyFacts, builders: List[SectionBuilder] = SECTIONS) -> List[Section]:
    return [s for s in (build(facts) for build in builders) if s is not None]


def render(facts: StudyFacts, sections: List[Section]) -> str:
    """report.md: the title, then each section's text and figures (relative links)."""
    out = [f"# Study {facts.name}", ""]
    for s in sections:
        out += [f"## {s.title}", "", s.text, ""]
        for name, _, caption in s.figures:
            out += [f"![{caption}]({name})", ""]
    return "\n".join(out)


def note(facts: StudyFacts, report_path: str) -> str:
    """The study's note on optuna-dashboard: the summary and the top trials."""
    return "\n".join([f"## Report of study {facts.name}", "", summary(facts), "", top_table(facts), "",
                      f"Plots and the full report: `{report_path}`"])
