"""The study report: its numbers on hand-made SQLite studies whose expected values are worked out
here, its figures inspected as matplotlib objects, its folder written whole, `mode=report`, and
one real sweep that ends with a report folder."""

import math
import re
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial
from optuna_dashboard._note import get_note_from_system_attrs

from sweeps import trial_record
from sweeps.compose import compose_study_config
from sweeps.config import StudyError
from sweeps.report import compute_of, facts_of, study_report, tokens_to_reach, write_report
from sweeps.report import plots
from sweeps.report.markdown import build_sections, top_table
from sweeps.runner import run
from sweeps.storage import StorageError
from sweeps.trial_record import BASELINE_AS_GIVEN

ROOT = Path(__file__).resolve().parents[1]
LR = FloatDistribution(1e-4, 1e-2, log=True)
WARMUP = FloatDistribution(0.0, 0.3)


class Attrs(dict):
    """The user attrs of a trial to be added, written by trial_record's own writers."""

    def set_user_attr(self, key, value):
        self[key] = value


def add(study, curve, state=TrialState.COMPLETE, *, budget=None, seen=None, status=None, baseline=False,
        params=None, failed=None):
    """Adds a finished trial with `curve` ({tokens: val loss}) as its intermediate values; a
    COMPLETE trial's value is its best val loss, as the objective returns."""
    attrs = Attrs()
    if budget is not None:
        trial_record.set_plan(attrs, warmup_step=0, budget_step=budget)
    if seen is not None:
        trial_record.record_outcome(attrs, status=status or "completed", stop_reason=status or "completed its budget",
                                    num_params=1000, num_params_non_embedding=900, tokens_seen=seen, epochs=0.1,
                                    ms_per_iter=1.0, train_val_gap=0.1, best_iter=1, wall_time_s=1.0,
                                    checkpoint=None)
    if baseline:
        trial_record.set_baseline(attrs, BASELINE_AS_GIVEN)
    if failed:
        trial_record.set_fail_reason(attrs, failed)
    params = params or {}
    dists = {k: (LR if k == "lr" else WARMUP) for k in params}
    study.add_trial(create_trial(
        state=state, value=min(curve.values()) if state == TrialState.COMPLETE else None,
        intermediate_values=curve, user_attrs=dict(attrs), params=params, distributions=dists))
    return study.get_trials(deepcopy=False)[-1]


def new_study(tmp_path, name="s"):
    tmp_path.mkdir(parents=True, exist_ok=True)
    return optuna.create_study(study_name=name, storage=f"sqlite:///{tmp_path / 'study.db'}")


def test_compute_used_and_saved_counts_what_each_trial_ran_and_what_pruning_spared_it(tmp_path):
    study = new_study(tmp_path)
    add(study, {0: 10.0, 500: 7.0, 1000: 6.0}, budget=1000, seen=1000, baseline=True)  # used 1000
    add(study, {0: 10.0, 500: 6.5, 1000: 5.5}, budget=1000, seen=1000)  # used 1000
    add(study, {0: 10.0, 300: 8.0}, TrialState.PRUNED, budget=1000, seen=300, status="stopped")  # 300, saves 700
    add(study, {0: 10.0, 600: 5.8}, budget=1000, seen=600, status="stopped")  # an early-stopped leader: 600, 400
    add(study, {0: 10.0, 200: 9.0}, TrialState.FAIL, budget=1000, failed="OSError: disk full")  # its last eval: 200
    add(study, {0: 10.0, 100: 9.5}, TrialState.PRUNED, seen=100)  # no budget recorded: nothing claimed saved
    used, saved = 1000 + 1000 + 300 + 600 + 200 + 100, 700 + 400
    assert compute_of(study) == (used, saved)
    facts = facts_of(study)
    assert (facts.used, facts.saved) == (used, saved)
    assert facts.per_trial_compute == {0: (1000, 0), 1: (1000, 0), 2: (300, 700), 3: (600, 400), 4: (200, 0),
                                       5: (100, 0)}
    share = round(100 * saved / (used + saved))  # 26%
    assert f"compute: {used:,} training tokens used; pruning and early stops saved {saved:,} ({share}% of" \
        in study_report(study)

    fig = plots.compute_figure(facts)
    ax = fig.axes[0]
    heights = {}
    for bar in ax.patches:
        x = round(bar.get_x() + bar.get_width() / 2)
        heights[x] = heights.get(x, 0) + bar.get_height()
    assert heights == {n: u + s for n, (u, s) in facts.per_trial_compute.items()}
    assert "3.2K training tokens used, 1.1K saved (26%" in ax.get_title()
    assert ax.get_xlabel() == "trial number" and ax.get_ylabel() == "training tokens"
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {
        "used: complete trial", "used: pruned trial", "used: failed or running trial",
        "saved by pruning or an early stop"}

    sections = {s.title: s for s in build_sections(facts)}
    assert sections["Failed trials (1)"].text == "- trial 4: OSError: disk full"
    assert f"{used:,} training tokens used" in sections["Compute used and saved by pruning"].text


def test_the_gain_in_tokens_is_when_the_best_first_reaches_the_baselines_val_loss(tmp_path):
    study = new_study(tmp_path)
    add(study, {0: 10.0, 100: 8.0, 200: 7.0, 300: 6.5, 400: 6.0}, baseline=True)
    add(study, {0: 10.0, 100: 7.5, 200: 6.2, 300: 5.9, 400: 5.5})
    facts = facts_of(study)
    assert facts.best.number == 1 and facts.baseline.number == 0
    # the baseline ends at 6.0 after 400 tokens; the best is first at or below it at 300 (5.9)
    assert (facts.gain.target, facts.gain.best_tokens, facts.gain.baseline_tokens) == (6.0, 300, 400)
    assert facts.gain.share == 0.75
    assert "it reached the baseline's val loss after 300 training tokens, 75% of the baseline's 400" \
        in study_report(study)


def test_a_baseline_that_overfit_is_compared_where_it_reached_its_best(tmp_path):
    study = new_study(tmp_path)
    add(study, {100: 7.0, 200: 6.0, 300: 6.3, 400: 6.6}, baseline=True)  # best 6.0 at 200, then worse
    add(study, {100: 6.4, 200: 5.9, 300: 5.8})
    gain = facts_of(study).gain
    assert (gain.best_tokens, gain.baseline_tokens, gain.share) == (200, 200, 1.0)
    assert tokens_to_reach(study.trials[1], 5.0) is None  # never that low


def test_when_no_trial_beats_the_baseline_there_is_no_gain(tmp_path):
    study = new_study(tmp_path)
    add(study, {100: 6.0}, baseline=True)
    add(study, {100: 6.2})
    facts = facts_of(study)
    assert facts.best is facts.baseline and facts.gain is None and not facts.beats_baseline
    assert plots.best_vs_baseline_figure(facts) is None
    assert "no trial beat the baseline (trial 0, val loss 6.0000)" in plots.curves_figure(facts).axes[0].get_title()


def test_the_top_k_are_the_lowest_val_losses_in_order_ties_by_trial_number(tmp_path):
    study = new_study(tmp_path)
    finals = [5.3, 5.1, 5.7, 5.0, 5.2, 5.1, 5.4]
    for i, v in enumerate(finals):
        add(study, {100: v + 1.0, 200: v}, baseline=i == 0)
    add(study, {100: 4.0}, TrialState.PRUNED)  # lowest of all, but pruned: no final val loss
    expected = sorted(range(len(finals)), key=lambda i: (finals[i], i))[:3]
    assert expected == [3, 1, 5]
    facts = facts_of(study, top_k=3)
    assert [t.number for t in facts.top] == expected
    rows = top_table(facts).splitlines()[2:]
    assert [int(r.split("|")[2]) for r in rows] == expected
    assert [float(r.split("|")[3]) for r in rows] == [5.0, 5.1, 5.1]
    assert [r.split("|")[4].strip() for r in rows] == ["-0.3000", "-0.2000", "-0.2000"]  # vs the baseline's 5.3
    table = study_report(study, top=3).splitlines()
    start = table.index(next(line for line in table if line.strip().startswith("trial")))
    assert [int(line.split()[0]) for line in table[start + 1:start + 4]] == expected


def sampled_study(tmp_path, n=10):
    """A baseline as given, `n` sampled trials whose final val loss depends on lr alone (plus a
    trace of warmup), and two pruned ones."""
    study = new_study(tmp_path)
    add(study, {0: 11.0, 100: 8.0, 400: 7.0, 1600: 6.5}, budget=1600, seen=1600, baseline=True)
    for i in range(n):
        lr = 10 ** (-4 + 2 * i / (n - 1))
        warmup = (i * 3 % n) / (n - 1) * 0.3  # spread over its range, nearly uncorrelated with lr
        final = 5.0 + (math.log10(lr) + 2.5) ** 2 + 0.01 * warmup
        add(study, {0: 11.0, 100: final + 2.0, 400: final + 0.8, 1600: final}, budget=1600, seen=1600,
            params={"lr": lr, "warmup": warmup})
    for lr in (1e-4, 1.5e-4):
        add(study, {0: 11.0, 100: 9.5, 400: 8.9}, TrialState.PRUNED, budget=1600, seen=400, status="stopped",
            params={"lr": lr, "warmup": 0.1})
    return study


def labelled(fig):
    ax = fig.axes[0]
    legend = ax.get_legend()
    assert ax.get_title() and ax.get_xlabel() and ax.get_ylabel() and legend is not None
    return ax, [t.get_text() for t in legend.get_texts()]


def test_every_figure_has_a_title_axis_labels_with_units_and_a_legend(tmp_path):
    study = sampled_study(tmp_path)
    facts = facts_of(study)
    best = facts.best
    assert best.params["lr"] == pytest.approx(10 ** (-4 + 2 * 7 / 9))  # nearest to 10^-2.5

    ax, legend = labelled(plots.curves_figure(facts))
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "training tokens (log scale)"
    assert ax.get_ylabel() == "val loss (nats/token)"
    assert f"trial {best.number} beats the baseline by {6.5 - best.value:.4f}" in ax.get_title()
    assert legend[:2] == [f"best: trial {best.number}, {best.value:.4f}", "baseline: trial 0, 6.5000"]
    assert "other complete trials (9)" in legend and "pruned trials (2), x: where pruned" in legend
    lines = ax.get_lines()
    best_line = next(ln for ln in lines if ln.get_color() == plots.BEST)
    assert list(best_line.get_xdata()) == [100, 400, 1600]  # 0 tokens cannot sit on a log axis
    assert list(best_line.get_ydata()) == [best.value + 2.0, best.value + 0.8, best.value]
    assert next(ln for ln in lines if ln.get_color() == plots.BASELINE).get_linestyle() == "--"
    pruned_marks = [ln for ln in lines if ln.get_marker() == "x"]
    assert [(list(m.get_xdata()), list(m.get_ydata())) for m in pruned_marks] == [([400], [8.9])] * 2
    assert all(ln.get_alpha() < 0.5 for ln in lines if ln.get_color() == plots.PRUNED and ln.get_marker() != "x")

    ax, legend = labelled(plots.best_vs_baseline_figure(facts))
    gain = facts.gain
    # the baseline ends at 6.5 after 1600 tokens; the best is at 7.0 after 100, at 5.8 after 400
    assert (gain.best_tokens, gain.baseline_tokens) == (400, 1600)
    assert "with 25% of its tokens (400 vs 1.6K)" in ax.get_title()
    assert "best reaches it: 400 tokens" in legend and "baseline reaches it: 1.6K tokens" in legend

    ax, legend = labelled(plots.importance_figure(facts))
    assert ax.get_xlabel().startswith("importance (share of val-loss variance")
    assert legend == ["fANOVA importance"]
    imp = facts.importances.values
    assert list(imp) == ["lr", "warmup"] and imp["lr"] > 0.8 and sum(imp.values()) == pytest.approx(1.0)

    ax, legend = labelled(plots.top_params_figure(facts))
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("lr (log scale)", "warmup") and ax.get_xscale() == "log"
    assert legend == ["pruned (2)", "complete (10), colour: val loss", f"best: trial {best.number}"]
    assert fig_colorbar_label(ax) == "val loss (nats/token)"

    ax, _ = labelled(plots.compute_figure(facts))


def fig_colorbar_label(ax):
    (cbar_ax,) = [a for a in ax.figure.axes if a is not ax]
    return cbar_ax.get_ylabel()


def test_importances_are_not_ranked_on_too_few_trials_or_one_param(tmp_path):
    few = facts_of(sampled_study(tmp_path / "few", n=3)).importances
    assert few.values == {} and few.why.startswith("only 3 complete sampled trial(s)")
    one = new_study(tmp_path / "one")
    for i in range(6):
        add(one, {100: 5.0 + i / 10}, params={"lr": 1e-3 * (i + 1)})
    imp = facts_of(one).importances
    assert imp.values == {"lr": 1.0} and "one param (lr)" in imp.why
    assert plots.importance_figure(facts_of(one)) is None


def test_the_report_folder_holds_report_md_with_each_plot_and_the_note_says_the_answer(tmp_path):
    study = sampled_study(tmp_path)
    path = write_report(study, tmp_path / "report")
    text = path.read_text()
    pngs = re.findall(r"\]\((\w+\.png)\)", text)
    assert pngs == ["curves.png", "best_vs_baseline.png", "importance.png", "top_params.png", "compute.png"]
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(pngs + ["report.md"])
    for name in pngs:
        assert matplotlib.image.imread(path.parent / name).shape == (750, 1200, 4)
    assert text.index("## The answer") < text.index("## Best trial vs the baseline") < text.index("## Top 5")
    assert "gain over the baseline (trial 0, val loss 6.5000)" in text
    note = get_note_from_system_attrs(study._storage.get_study_system_attrs(study._study_id), None)
    assert note["version"] == 1 and "gain over the baseline (trial 0" in note["body"]
    assert "| rank | trial |" in note["body"] and str(path) in note["body"]
    write_report(study, tmp_path / "report")  # again: the note's next version
    assert get_note_from_system_attrs(study._storage.get_study_system_attrs(study._study_id), None)["version"] == 2


def test_a_crash_while_writing_leaves_the_previous_report_whole(tmp_path, monkeypatch):
    import sweeps.report.write as write

    study = sampled_study(tmp_path)
    path = write_report(study, tmp_path / "report")
    before = {p.name: p.read_bytes() for p in path.parent.iterdir()}
    add(study, {100: 3.0})  # a new best: the next report differs

    def crash(*_):
        raise OSError("No space left on device")

    monkeypatch.setattr(write, "render", crash)  # after every PNG was written, before report.md
    with pytest.raises(OSError, match="No space left"):
        write_report(study, tmp_path / "report")
    assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "study.db"]  # no temp folder left
    monkeypatch.undo()
    write_report(study, tmp_path / "report")
    assert "with trial 13" in path.read_text()


def report_cfg(url, name):
    return compose_study_config(["mode=report", f"study.name={name}", f"study.storage={url}"]), []


def test_mode_report_refuses_a_study_without_a_complete_trial_and_creates_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with pytest.raises(StorageError, match="there is no database file"):
        run(*report_cfg(url, "s"))
    assert not (tmp_path / "study.db").exists()
    study = new_study(tmp_path)
    add(study, {100: 8.0}, TrialState.PRUNED)
    add(study, {100: 8.0}, TrialState.FAIL)
    with pytest.raises(StudyError, match=r"^study 's' has no complete trial to report \(1 PRUNED, 1 FAIL\)"):
        run(*report_cfg(url, "s"))
    with pytest.raises(StudyError, match=r"no study 'other' in .*studies there: s"):
        run(*report_cfg(url, "other"))
    with pytest.raises(StudyError, match="mode=report needs the study"):
        run(compose_study_config(["mode=report", f"study.storage={url}"]), [])
    # the command line: one line, a failing exit code
    proc = subprocess.run([sys.executable, str(ROOT / "study_runner.py"), "mode=report", "study.name=s",
                           f"study.storage={url}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: study 's' has no complete trial to report (1 PRUNED, 1 FAIL); run mode=sweep first, "
        "or wait for a trial to finish"]


def test_a_sweep_ends_with_a_report_folder_and_mode_report_rewrites_it(workdir, capsys):
    cwd, common = workdir
    url = f"sqlite:///{cwd / 'study.db'}"
    tiny = ["model.n_layer=1", "model.n_head=2", "model.n_embd=32", "model.block_size=32", "batch_size=4",
            "eval_iters=2", "schedule.max_iters=20", "eval_interval=5", "log_interval=20"]
    overrides = ["+sweep=lr_warmup", *tiny, f"study.storage={url}", "study.n_trials=3", *common]
    study = run(compose_study_config(overrides), overrides)
    folder = cwd / "outputs" / "studies" / "lr_warmup" / "report"
    out = capsys.readouterr().out
    assert f"report: {Path('outputs/studies/lr_warmup/report/report.md')}" in out
    text = (folder / "report.md").read_text()
    pngs = re.findall(r"\]\((\w+\.png)\)", text)
    # three trials: too few for fANOVA, which the report says instead of a plot
    assert {"curves.png", "best_vs_baseline.png", "top_params.png", "compute.png"} <= set(pngs)
    assert "importance.png" not in pngs and "No importances: only 2 complete sampled trial(s)" in text
    for name in pngs:
        assert (folder / name).stat().st_size > 0
        assert matplotlib.image.imread(folder / name).shape == (750, 1200, 4)
    best = min((t for t in study.trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    assert f"best: trial {best.number}, val loss {best.value:.4f}" in text

    (folder / "curves.png").unlink()
    run(*report_cfg(url, "lr_warmup"))
    assert (folder / "curves.png").stat().st_size > 0 and (folder / "report.md").read_text() == text
    assert "report: outputs/studies/lr_warmup/report/report.md" in capsys.readouterr().out


def test_the_reports_files_are_the_studys_artifacts_once_per_content(tmp_path):
    from optuna.artifacts import get_all_artifact_meta

    from sweeps.artifacts import open_artifact_store
    study = sampled_study(tmp_path)
    store = open_artifact_store(tmp_path / "artifacts")
    path = write_report(study, tmp_path / "report", artifact_store=store)
    names = sorted(m.filename for m in get_all_artifact_meta(study))
    assert names == sorted(p.name for p in path.parent.iterdir())  # report.md and every PNG
    [md] = [m for m in get_all_artifact_meta(study) if m.filename == "report.md"]
    with store.open_reader(md.artifact_id) as reader:
        assert reader.read() == path.read_bytes()
    write_report(study, tmp_path / "report", artifact_store=store)  # no new trial: nothing new to attach
    assert sorted(m.filename for m in get_all_artifact_meta(study)) == names
