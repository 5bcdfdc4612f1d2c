"""RungHalvingPruner: ASHA on hand-made rung values (one report per rung, as cooldown trials make)."""

from __future__ import annotations

import optuna
import pytest

from sweeps.rung_pruner import RungHalvingPruner

optuna.logging.set_verbosity(optuna.logging.WARNING)


def run(study: optuna.Study, values, tokens_per_rung=(1000, 3000, 9000)):
    """A trial reporting `values` at the rungs' steps until pruned; its state and decisions."""
    trial = study.ask()
    decisions = []
    for value, step in zip(values, tokens_per_rung):
        trial.report(value, step)
        pruned = trial.should_prune()
        decisions.append(study.pruner.last_decision(trial.number))
        if pruned:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            return "pruned", decisions
    study.tell(trial, values[-1])
    return "complete", decisions


def test_fewer_than_eta_trials_at_a_rung_all_go_on():
    study = optuna.create_study(pruner=RungHalvingPruner(eta=3))
    assert run(study, [5.0, 4.0, 3.0])[0] == "complete"
    state, decisions = run(study, [6.0, 5.0, 4.0])  # worse everywhere, but only 2 at each rung
    assert state == "complete" and decisions[0].kept == 0 and not decisions[0].prunes


def test_only_the_top_third_goes_on_once_eta_trials_reached_the_rung():
    study = optuna.create_study(pruner=RungHalvingPruner(eta=3))
    run(study, [5.0, 4.0, 3.0])
    run(study, [6.0, 5.0, 4.0])
    state, decisions = run(study, [5.5, 4.5, 3.5])  # 2nd of 3 at rung 0: floor(3/3) = 1 go on
    assert state == "pruned" and decisions[-1].rank == 2 and decisions[-1].kept == 1
    assert "ranks 2 of the 3 trials" in decisions[-1].reason
    state, _ = run(study, [4.9, 3.9, 2.9])  # best at every rung: goes on to the end
    assert state == "complete"


def test_a_trial_is_compared_at_its_own_rung_with_the_trials_that_reached_it():
    study = optuna.create_study(pruner=RungHalvingPruner(eta=2))
    run(study, [5.0, 4.0, 3.0])
    run(study, [5.2, 4.4, 3.1])
    state, decisions = run(study, [4.8, 4.2, 3.0])
    # rung 0: best of 3 (top 1 go on); rung 1: 2nd of 3 -> pruned (4.0 beats it)
    assert state == "pruned" and [d.rank for d in decisions] == [1, 2]


def test_ties_are_kept_and_steps_need_not_match_between_trials():
    study = optuna.create_study(pruner=RungHalvingPruner(eta=2))
    run(study, [5.0, 4.0], tokens_per_rung=(1000, 3000))
    state, decisions = run(study, [5.0, 4.0], tokens_per_rung=(2000, 6000))  # other tokens per iteration
    assert state == "complete" and decisions[0].rank == 1 and decisions[0].reached == 2


def test_a_non_finite_value_ranks_last():
    study = optuna.create_study(pruner=RungHalvingPruner(eta=2))
    run(study, [5.0, 4.0])
    state, decisions = run(study, [float("nan"), 4.0])
    assert state == "pruned" and decisions[0].rank == 2


def test_eta_below_two_is_refused():
    with pytest.raises(ValueError, match="eta=1 is invalid"):
        RungHalvingPruner(eta=1)


def test_trials_are_matched_by_their_recorded_rungs_when_one_skipped_a_rung_in_its_warmup():
    from sweeps import trial_record

    study = optuna.create_study(pruner=RungHalvingPruner(eta=2))
    steps = [1000, 3000, 9000]
    for values in ([5.0, 4.0, 3.0], [5.5, 4.5, 3.5]):
        trial = study.ask()
        trial_record.set_rung_steps(trial, steps)
        for v, s in zip(values, steps):
            trial.report(v, s)
        study.tell(trial, values[-1])
    late = study.ask()  # a long warmup: its first value is at rung 1
    trial_record.set_rung_steps(late, steps)
    late.report(4.2, 3000)
    assert late.should_prune()  # 2nd of 3 at rung 1 (4.0 beats it); floor(3 / 2) = 1 go on
    decision = study.pruner.last_decision(late.number)
    assert (decision.rung, decision.rank, decision.reached) == (1, 2, 3)
