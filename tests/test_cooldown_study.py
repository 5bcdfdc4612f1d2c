"""study.fidelity=cooldown end to end: a real study of tiny GPTs judged on decayed rung values,
its best trial's stable phase continued by mode=best, and the report's predictions."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from sweeps import trial_record
from sweeps.config import PrunerConfig, StudyConfig, StudyError, check_study
from tests.test_study_runner import TINY, run_cli

RUNGS = ["study.fidelity=cooldown", "study.rungs.count=3", "study.rungs.eta=3", "study.rungs.cooldown_fraction=0.2",
         "schedule.max_iters=45", "eval_interval=9", "schedule.warmup_iters=2"]


def test_a_cooldown_study_reports_rungs_and_its_best_run_continues_the_stable_phase(workdir):
    cwd, common = workdir
    url = f"sqlite:///{cwd / 'study.db'}"
    # asha that prunes (tests/test_promotions.py runs the default, which pauses and continues)
    base = ["+sweep=lr_warmup", *TINY, *RUNGS, "study.rungs.promotions=false", f"study.storage={url}", *common]
    code, out = run_cli([*base, "study.n_trials=4", "plan.long_run_iters=90"], cwd)
    assert code == 0, out
    study = optuna.load_study(study_name="lr_warmup", storage=url)
    trials = study.get_trials()
    assert len(trials) == 4
    per_iter = 4 * 32
    horizons = [5 * per_iter, 15 * per_iter, 45 * per_iter]
    cooldowns = {5 * per_iter: 1, 15 * per_iter: 3, 45 * per_iter: 9}  # iterations: 20% of each horizon
    for t in trials:
        rungs = trial_record.rung_val_loss(t)
        assert t.intermediate_values == rungs  # reported values are the decayed ones, and only those
        assert set(rungs) <= set(horizons) and trial_record.rung_steps(t) == horizons
        assert trial_record.stable_val_loss(t)  # the stable curve, kept apart
        if t.state == TrialState.COMPLETE:
            assert t.value == rungs[horizons[-1]]  # the last rung is never skipped
            assert trial_record.cooldown_tokens(t) == sum(cooldowns[s] for s in rungs) * per_iter
            assert trial_record.tokens_seen(t) == 36 * per_iter + trial_record.cooldown_tokens(t)
        else:
            assert t.state == TrialState.PRUNED and "only the top" in trial_record.stop_reason(t)
    baseline = trials[0]  # warmup_iters=2: judged at every rung
    assert sorted(trial_record.rung_val_loss(baseline)) == horizons
    assert study.user_attrs["fixed_settings"]["study.fidelity"] == "cooldown"
    report = (cwd / "outputs" / "studies" / "lr_warmup" / "report" / "report.md").read_text()
    assert "## Cooldown rungs and the long run predicted" in report and "plan.long_run_iters=90" in report

    code, out = run_cli([*base, "mode=best", "schedule.max_iters=90"], cwd)
    assert code == 0, out
    best = study.best_trial
    assert f"continuing trial {best.number}'s stable phase" in out and "resuming at iteration 36" in out, [l for l in out.splitlines() if "anew" in l or "continu" in l]
    n_rungs = len(trial_record.rung_val_loss(best))  # a long warmup skips the early rungs
    if n_rungs >= 3:
        assert f"predicted from its {n_rungs} rungs" in out and "reached" in out
    else:
        assert "predicted" not in out

    # the study judged cooldown rungs: resuming it as a full-fidelity study would mix values
    code, out = run_cli([*base[:-len(common) or None], "study.fidelity=full", "study.n_trials=5", *common], cwd)
    assert code != 0 and "study.fidelity='cooldown', now 'full'" in out


@pytest.mark.parametrize("fidelity, pruner, message", [
    ("cooldown", "median", "judges raw learning curves, but study.fidelity=cooldown"),
    ("full", "asha", "add study.fidelity=cooldown"),
    ("halfway", "auto", "study.fidelity='halfway' is invalid: valid: full, cooldown"),
])
def test_pruner_and_fidelity_that_do_not_fit_are_refused(fidelity, pruner, message):
    with pytest.raises(StudyError, match=message):
        check_study(StudyConfig(fidelity=fidelity, pruner=PrunerConfig(name=pruner)))
