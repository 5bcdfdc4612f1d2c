"""The report's figures, drawn from :class:`~sweeps.report.facts.StudyFacts` with matplotlib's
object API on the Agg canvas (no pyplot: no global backend switch, no figures kept alive).

Each function returns a Figure, or None when the study lacks what it shows (the report says why).
Every axes has a title, axis labels with units and a legend; the first figure, the curves of
every trial, answers the study's question on its own."""

from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from sweeps import trial_record
from sweeps.report import fmt
from sweeps.report.facts import StudyFacts, curve_of

LOSS = "val loss (nats/token)"
TOKENS = "training tokens (log scale)"
BEST, BASELINE, OTHER, PRUNED, SAVED = "tab:red", "black", "tab:blue", "tab:gray", "tab:green"
SIZE = (8.0, 5.0)  # inches; at DPI, 1200 x 750 pixels
DPI = 150


def new_figure() -> Tuple[Figure, "object"]:
    fig = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _positive(steps: Sequence[int], values: Sequence[float]) -> Tuple[List[int], List[float]]:
    """The points a log-x axis can show: the evaluation before training (0 tokens) is left out."""
    kept = [(s, v) for s, v in zip(steps, values) if s > 0 and math.isfinite(v)]
    return [s for s, _ in kept], [v for _, v in kept]


def _loss_limits(facts: StudyFacts, curves: Dict[int, Tuple[List[int], List[float]]]) -> Tuple[float, float]:
    """A val-loss range that shows where trials part ways: from just below the best loss up to
    the highest loss any trial had at its final evaluation, with room for the first drop. The
    early evaluations (near the initial loss, ~ln(vocab)) would otherwise flatten the ending."""
    finals = [v[-1] for _, v in curves.values() if v]
    lows = [min(v) for _, v in curves.values() if v]
    if not finals:
        return 0.0, 1.0
    low, high = min(lows), max(finals)
    span = max(high - low, 1e-3)
    return low - 0.08 * span, high + 0.45 * span


def _tokens_axis(ax) -> None:
    """A log-x axis of training tokens, ticked at 1, 2 and 5 per decade in short form (640, 1.28K)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt.tokens(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _titled(ax, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def _answer_title(facts: StudyFacts) -> str:
    best, baseline = facts.best, facts.baseline
    if best is None:
        return f"study {facts.name}: no complete trial"
    if baseline is None:
        return f"study {facts.name}: best trial {best.number}, val loss {best.value:.4f} (no baseline)"
    if best is baseline:
        return f"study {facts.name}: no trial beat the baseline (trial {baseline.number}, val loss {baseline.value:.4f})"
    text = (f"study {facts.name}: trial {best.number} beats the baseline by "
            f"{baseline.value - best.value:.4f} val loss ({best.value:.4f} vs {baseline.value:.4f})")
    if facts.gain is not None:
        text += f"\nand reaches the baseline's loss with {fmt.share(facts.gain.share)} of its tokens"
    return text


def curves_figure(facts: StudyFacts) -> Optional[Figure]:
    """Val loss against training tokens for every trial that reported one: pruned trials faded
    with an x where they were pruned, the best and the baseline drawn over the rest."""
    curves = {t.number: _positive(*curve_of(t)) for t in facts.trials}
    curves = {n: c for n, c in curves.items() if c[0]}
    if not curves:
        return None
    fig, ax = new_figure()
    best = facts.best.number if facts.best is not None else None
    base = facts.baseline.number if facts.baseline is not None else None
    n_other = n_pruned = 0
    for t in facts.trials:
        if t.number not in curves or t.number in (best, base):
            continue
        steps, values = curves[t.number]
        if t.state == TrialState.PRUNED:
            n_pruned += 1
            ax.plot(steps, values, color=PRUNED, alpha=0.35, lw=1)
            ax.plot(steps[-1], values[-1], "x", color=PRUNED, alpha=0.8, ms=7, mew=1.5)
        else:
            n_other += 1
            ax.plot(steps, values, color=OTHER, alpha=0.55, lw=1)
    handles = []
    if base is not None and base in curves:
        ax.plot(*curves[base], color=BASELINE, lw=2.2, ls="--", marker=".", zorder=3)
        handles.append(Line2D([], [], color=BASELINE, lw=2.2, ls="--",
                              label=f"baseline: trial {base}, {facts.baseline.value:.4f}"))
    if best is not None and best in curves and best != base:
        ax.plot(*curves[best], color=BEST, lw=2.6, marker=".", zorder=4)
        handles.insert(0, Line2D([], [], color=BEST, lw=2.6, label=f"best: trial {best}, {facts.best.value:.4f}"))
    if n_other:
        handles.append(Line2D([], [], color=OTHER, alpha=0.55, lw=1, label=f"other complete trials ({n_other})"))
    if n_pruned:
        handles.append(Line2D([], [], color=PRUNED, alpha=0.6, lw=1, marker="x", mew=1.5,
                              label=f"pruned trials ({n_pruned}), x: where pruned"))
    _tokens_axis(ax)
    ax.set_ylim(*_loss_limits(facts, curves))
    ax.grid(True, which="both", alpha=0.25)
    _titled(ax, _answer_title(facts), TOKENS, LOSS)
    ax.legend(handles=handles, loc="upper right", fontsize=9)
    return fig


def _with_band(ax, trial: FrozenTrial, color: str, **style) -> None:
    steps, values = _positive(*curve_of(trial))
    se = trial_record.val_loss_se(trial)
    ax.plot(steps, values, color=color, marker=".", **style)
    if all(s in se for s in steps):
        ax.fill_between(steps, [v - se[s] for s, v in zip(steps, values)],
                        [v + se[s] for s, v in zip(steps, values)], color=color, alpha=0.15, lw=0)


def best_vs_baseline_figure(facts: StudyFacts) -> Optional[Figure]:
    """The best trial and the baseline alone, each with its val loss's standard error as a band,
    the baseline's val loss as a line and the tokens each needed to reach it."""
    best, baseline = facts.best, facts.baseline
    if best is None or baseline is None or best is baseline:
        return None
    fig, ax = new_figure()
    _with_band(ax, baseline, BASELINE, lw=2, ls="--", label=f"baseline: trial {baseline.number}")
    _with_band(ax, best, BEST, lw=2.4, label=f"best: trial {best.number}")
    ax.axhline(baseline.value, color=BASELINE, lw=0.8, alpha=0.6,
               label=f"baseline's val loss {baseline.value:.4f}")
    title = f"best trial {best.number} vs the baseline (trial {baseline.number}), bands: ±1 standard error"
    if facts.gain is not None:
        g = facts.gain
        ax.axvline(g.best_tokens, color=BEST, lw=1, ls=":",
                   label=f"best reaches it: {fmt.tokens(g.best_tokens)} tokens")
        ax.axvline(g.baseline_tokens, color=BASELINE, lw=1, ls=":",
                   label=f"baseline reaches it: {fmt.tokens(g.baseline_tokens)} tokens")
        title = (f"trial {best.number} reaches the baseline's val loss with {fmt.share(g.share)} of its tokens "
                 f"({fmt.tokens(g.best_tokens)} vs {fmt.tokens(g.baseline_tokens)})\nbands: ±1 standard error "
                 f"of each evaluation")
    curves = {t.number: _positive(*curve_of(t)) for t in (best, baseline)}
    _tokens_axis(ax)
    ax.set_ylim(*_loss_limits(facts, curves))
    ax.grid(True, which="both", alpha=0.25)
    _titled(ax, title, TOKENS, LOSS)
    ax.legend(loc="upper right", fontsize=9)
    return fig


def importance_figure(facts: StudyFacts) -> Optional[Figure]:
    """The params' fANOVA importances as horizontal bars, the most important on top."""
    imp = facts.importances
    if imp.why is not None or not imp.values:
        return None
    fig, ax = new_figure()
    names = list(imp.values)[::-1]
    ax.barh(names, [imp.values[n] for n in names], color=OTHER, label="fANOVA importance")
    for i, n in enumerate(names):
        ax.text(imp.values[n], i, f" {imp.values[n]:.2f}", va="center", fontsize=9)
    ax.set_xlim(0, max(imp.values.values()) * 1.15)
    _titled(ax, f"which params mattered: fANOVA importance over {imp.n_trials} complete trials",
            "importance (share of val-loss variance explained, sums to 1)", "param")
    ax.legend(loc="lower right", fontsize=9)
    return fig


def _axis_values(dist: BaseDistribution, values: Sequence) -> List[float]:
    if isinstance(dist, CategoricalDistribution):
        return [dist.to_internal_repr(v) for v in values]
    return [float(v) for v in values]


def _param_axis(ax, which: str, name: str, dist: BaseDistribution) -> str:
    """Sets the axis' scale and ticks for the param; returns its label."""
    if isinstance(dist, CategoricalDistribution):
        ticks = list(range(len(dist.choices)))
        getattr(ax, f"set_{which}ticks")(ticks, [str(c) for c in dist.choices])
        getattr(ax, f"set_{which}lim")(-0.5, len(ticks) - 0.5)
        return f"{name} (choice)"
    if getattr(dist, "log", False):
        getattr(ax, f"set_{which}scale")("log")
        return f"{name} (log scale)"
    return name


def top_params_figure(facts: StudyFacts) -> Optional[Figure]:
    """The two most important params (or, without importances, the first two searched) as a
    scatter of the complete trials coloured by val loss; pruned trials as grey x, the best
    ringed, the baseline (when it was a point of the space) boxed."""
    ranked = list(facts.importances.values) if facts.importances.why is None else []
    names = (ranked + [k for k in facts.distributions if k not in ranked])[:2]
    if len(names) < 2:
        return None
    x, y = names
    dx, dy = facts.distributions[x], facts.distributions[y]
    fig, ax = new_figure()
    done = [t for t in facts.complete if x in t.params and y in t.params]
    pruned = [t for t in facts.trials if t.state == TrialState.PRUNED and x in t.params and y in t.params]
    if pruned:
        ax.scatter(_axis_values(dx, [t.params[x] for t in pruned]), _axis_values(dy, [t.params[y] for t in pruned]),
                   marker="x", color=PRUNED, alpha=0.7, label=f"pruned ({len(pruned)})")
    if done:
        points = ax.scatter(_axis_values(dx, [t.params[x] for t in done]), _axis_values(dy, [t.params[y] for t in done]),
                            c=[t.value for t in done], cmap="viridis_r", s=60, edgecolors="black", linewidths=0.5,
                            label=f"complete ({len(done)}), colour: val loss")
        fig.colorbar(points, ax=ax, label=LOSS)
    base = facts.baseline
    if base is not None and x in base.params and y in base.params:
        ax.scatter(_axis_values(dx, [base.params[x]]), _axis_values(dy, [base.params[y]]), s=200, marker="s",
                   facecolors="none", edgecolors=BASELINE, linewidths=1.5, label=f"baseline: trial {base.number}")
    if facts.best is not None and x in facts.best.params and y in facts.best.params:
        ax.scatter(_axis_values(dx, [facts.best.params[x]]), _axis_values(dy, [facts.best.params[y]]), s=260,
                   facecolors="none", edgecolors=BEST, linewidths=2, label=f"best: trial {facts.best.number}")
    xlabel, ylabel = _param_axis(ax, "x", x, dx), _param_axis(ax, "y", y, dy)
    how = "the two most important params" if ranked else "two searched params (importances not ranked)"
    _titled(ax, f"{how}: val loss of each trial", xlabel, ylabel)
    ax.grid(True, alpha=0.25)
    # below the axes: a legend inside would hide the very points it names
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=4, fontsize=9, markerscale=0.6)
    return fig


def compute_figure(facts: StudyFacts) -> Optional[Figure]:
    """Per trial, the training tokens it ran (by state) and, stacked on them, what pruning or an
    early stop saved."""
    rows = [(t, *facts.per_trial_compute[t.number]) for t in facts.trials
            if sum(facts.per_trial_compute[t.number]) > 0]
    if not rows:
        return None
    fig, ax = new_figure()
    colour = {TrialState.COMPLETE: OTHER, TrialState.PRUNED: PRUNED}
    labelled = set()
    for t, used, saved in rows:
        state = t.state if t.state in colour else None
        label = {TrialState.COMPLETE: "used: complete trial", TrialState.PRUNED: "used: pruned trial",
                 None: "used: failed or running trial"}[state]
        ax.bar(t.number, used, color=colour.get(state, "tab:orange"),
               label=None if label in labelled else label)
        labelled.add(label)
        if saved:
            ax.bar(t.number, saved, bottom=used, color=SAVED, alpha=0.35, hatch="//", edgecolor=SAVED,
                   label=None if "saved" in labelled else "saved by pruning or an early stop")
            labelled.add("saved")
    total = facts.used + facts.saved
    _titled(ax, f"compute: {fmt.tokens(facts.used)} training tokens used, {fmt.tokens(facts.saved)} saved "
                f"({fmt.share(facts.saved / total)} of running every trial to its end)",
            "trial number", "training tokens")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt.tokens(v)))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylim(0, 1.35 * max(used + saved for _, used, saved in rows))  # room for the legend
    ax.legend(loc="upper right", fontsize=9)
    return fig
