"""ASHA's promotions (sweeps.promotions, RungHalvingPruner(promotions=True)) on hand-made rung
values, then in real studies of tiny GPTs: a paused trial's continuation trains the same run."""

from __future__ import annotations

import dataclasses
import json

import optuna
import pytest
from optuna.trial import TrialState

from sweeps import trial_record
from sweeps.best_run import cooldown_overrides
from sweeps.config import PrunerConfig, RungsConfig, StudyConfig, StudyError, check_study, promotions_on
from sweeps.objective import TrialFailed
from sweeps.promotions import (best_at_highest_rung, continuation_waits, promotable, queue_continuation,
                               queue_promotion)
from sweeps.retries import requeue
from sweeps.rung_pruner import RungHalvingPruner
from sweeps.trial_resume import at_attempts_micro_batch, previous_attempt
from trainer import TrainConfig
from sweeps.journal_storage import HEARTBEAT_ATTR
from sweeps.retries import carried_system_attrs
from sweeps.trial_quota import continued_once, grid_done, trials_taken, within_budget
from tests.configs import TINY
from tests.test_study_runner import run_cli

optuna.logging.set_verbosity(optuna.logging.WARNING)
STEPS = [1000, 3000, 9000]


def run(study: optuna.Study, values, params=None, trial=None):
    """A trial reporting `values` at the rungs until the pruner stops it, as the objective does:
    paused (PRUNED with paused_at_rung) when the pruner pauses it. (trial number, state, decisions)."""
    trial = trial or study.ask(params or {})
    trial_record.set_rung_steps(trial, STEPS)
    decisions = []
    for rung, (value, step) in enumerate(zip(values, STEPS)):
        trial.report(value, step)
        if rung == len(STEPS) - 1:
            break
        stops = trial.should_prune()
        decisions.append(study.pruner.last_decision(trial.number))
        if stops:
            trial_record.set_paused_at_rung(trial, rung)
            study.tell(trial, state=TrialState.PRUNED)
            return trial.number, "paused", decisions
    study.tell(trial, values[-1])
    return trial.number, "complete", decisions


def promoting_study(eta=3):
    return optuna.create_study(pruner=RungHalvingPruner(eta=eta, promotions=True))


def continue_trial(study: optuna.Study, values):
    """Queue the promotable trial's continuation, take it as a worker's ask does and run it on:
    it reports its paused trial's values again, then `values` at its later rungs."""
    paused = promotable(study.get_trials(), study.pruner.eta)
    assert paused is not None
    queue_continuation(study, paused)
    trial = study.ask()
    assert trial_record.continues(trial) == paused.number and trial.params == paused.params
    carried = [paused.intermediate_values[s] for s in sorted(paused.intermediate_values)]
    return run(study, carried + values, trial=trial)


def test_with_promotions_the_first_trials_pause_instead_of_going_on():
    study = promoting_study()
    number, state, decisions = run(study, [5.0, 4.0, 3.0])
    assert state == "paused" and decisions[0].kept == 0 and decisions[0].prunes
    assert "paused, its checkpoint kept" in decisions[0].reason
    assert promotable(study.get_trials(), 3) is None  # 1 trial at rung 0: none goes on yet
    # without promotions the same trial would have gone on: fewer than eta trials at the rung
    assert run(optuna.create_study(pruner=RungHalvingPruner(eta=3)), [5.0, 4.0, 3.0])[1] == "complete"


def test_a_paused_trial_goes_on_once_it_is_in_the_top_third_of_the_trials_at_its_rung():
    study = promoting_study()
    first, _, _ = run(study, [5.0])
    run(study, [6.0])
    number, state, decisions = run(study, [4.0, 3.5, 3.0])  # best of 3: goes on at once, then alone at rung 1
    assert decisions[0].rank == 1 and not decisions[0].prunes and state == "paused" and decisions[1].kept == 0
    assert promotable(study.get_trials(), 3) is None  # the top 1 at rung 0 is the trial that went on
    for value in (7.0, 8.0):
        run(study, [value])
    assert promotable(study.get_trials(), 3) is None  # 5 trials: still only the top 1
    run(study, [9.0])  # 6 trials at rung 0: the top 2 go on, 5.0 among them
    assert promotable(study.get_trials(), 3).number == first


def test_the_highest_rung_is_promoted_first_and_a_config_counts_once_at_a_rung():
    study = promoting_study(eta=2)
    a, _, _ = run(study, [5.0])  # paused: alone at rung 0
    run(study, [6.0])  # paused: 2nd of 2
    assert promotable(study.get_trials(), 2).number == a  # top 1 of 2
    c, state, decisions = continue_trial(study, [4.0])
    # a's value at rung 0 counts once though a's continuation reported it again: 2 configs there
    assert (decisions[0].reached, decisions[0].rank) == (2, 1)
    assert state == "paused" and decisions[1].reached == 1  # alone at rung 1
    run(study, [5.5])  # 2nd of 3 configs at rung 0: paused
    e, _, decisions = run(study, [4.5, 4.2])  # rung 0: 1st of 4 goes on; rung 1: 2nd of 2, paused
    assert [d.reached for d in decisions] == [4, 2] and decisions[1].prunes
    assert promotable(study.get_trials(), 2).number == c  # rung 1 before rung 0: c is its top 1 of 2


def test_at_the_end_the_best_paused_trial_at_the_highest_rung_goes_on():
    study = promoting_study()
    run(study, [5.0])
    b, _, _ = run(study, [4.0])
    assert promotable(study.get_trials(), 3) is None
    assert best_at_highest_rung(study.get_trials()).number == b
    # new configs still to draw: nothing is queued; none left: the best at the highest rung goes on
    assert queue_promotion(study, 3, new_configs_left=True) is None
    said = queue_promotion(study, 3, new_configs_left=False)
    assert said.startswith(f"trial {b} (paused at rung 0) goes on") and continuation_waits(study.get_trials())
    assert queue_promotion(study, 3, new_configs_left=False) is None  # one waits: not queued twice


def test_a_continuation_keeps_its_config_grid_point_and_series_and_starts_its_own_retry_count():
    study = optuna.create_study(sampler=optuna.samplers.GridSampler({"x": [1.0, 2.0]}),
                                pruner=RungHalvingPruner(eta=3, promotions=True))
    trial = study.ask()
    trial.suggest_float("x", 1.0, 2.0)
    run(study, [5.0], trial=trial)
    paused = study.get_trials()[0]
    queue_continuation(study, paused)
    waiting = study.get_trials(states=(TrialState.WAITING,))[0]
    assert waiting.params == paused.params and waiting.system_attrs["grid_id"] == paused.system_attrs["grid_id"]
    assert trial_record.retry_of(waiting) == 0 and trial_record.continues(waiting) == 0
    assert "retry_history" not in waiting.system_attrs
    assert trials_taken(study) == 1  # one config, however many trials run it


def test_a_continuation_queued_twice_runs_once_and_does_not_count_against_n_trials():
    study = promoting_study()
    run(study, [5.0])
    for _ in range(2):  # two workers looked at once
        queue_continuation(study, study.get_trials()[0])
    ran = []
    objective = within_budget(continued_once(lambda t: ran.append(t.number) or 1.0), n_trials=1)
    study.optimize(objective, n_trials=2, catch=(TrialFailed,))
    states = {t.number: t.state for t in study.get_trials()}
    assert ran == [1] and states[1] == TrialState.COMPLETE and states[2] == TrialState.FAIL
    assert trial_record.fail_reason(study.get_trials()[2]).startswith("not run: trial 1 already continues trial 0")


def test_promotions_are_on_wherever_asha_prunes_unless_turned_off():
    assert promotions_on(StudyConfig(fidelity="cooldown"))  # auto: asha
    assert promotions_on(StudyConfig(fidelity="cooldown", pruner=PrunerConfig(name="asha")))
    assert not promotions_on(StudyConfig(fidelity="cooldown", rungs=RungsConfig(promotions=False)))
    assert not promotions_on(StudyConfig(fidelity="cooldown", pruner=PrunerConfig(name="none")))
    assert not promotions_on(StudyConfig())  # full-length trials: no rungs to pause at
    check_study(StudyConfig())  # the default null is no request, so it is never refused


def test_promotions_without_cooldown_rungs_or_with_no_pruner_are_refused():
    with pytest.raises(StudyError, match="study.rungs.promotions=true continues trials that asha paused"):
        check_study(StudyConfig(rungs=RungsConfig(promotions=True)))
    with pytest.raises(StudyError, match="study.pruner.name=none"):
        check_study(StudyConfig(fidelity="cooldown", rungs=RungsConfig(promotions=True),
                                pruner=PrunerConfig(name="none")))


# the null warmup share on the command line is as a user may type it: mode=best still keeps the trial's warmup
RUNGS = ["study.fidelity=cooldown", "study.rungs.count=3", "study.rungs.eta=3", "study.rungs.cooldown_fraction=0.2",
         "schedule.max_iters=45", "eval_interval=9", "schedule.warmup_fraction=null"]
GRID = 'sweep.params={schedule.lr: "choice(1e-3, 4e-3, 1.6e-2)", schedule.warmup_iters: "choice(2, 10)"}'


def test_a_promoting_study_continues_paused_trials_as_the_runs_they_would_have_been(workdir):
    cwd, common = workdir
    url = f"sqlite:///{cwd / 'study.db'}"
    base = ["+sweep=lr_warmup_iters_grid_bytes", *TINY, *RUNGS, f"study.storage={url}", *common]
    code, out = run_cli([*base, GRID, "study.n_trials=6"], cwd)  # asha's promotions: the default
    assert code == 0, out
    study = optuna.load_study(study_name="lr_warmup_iters_grid_bytes", storage=url)
    trials = study.get_trials()
    continuations = [t for t in trials if trial_record.continues(t) is not None]
    assert continuations and len(trials) == 6 + len(continuations)  # n_trials counts configs
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6
    assert "6 configs;" in out and "continued later by a trial of their own" in out
    by_number = {t.number: t for t in trials}
    for c in continuations:
        paused = by_number[trial_record.continues(c)]
        assert trial_record.paused_at_rung(paused) == trial_record.rung_steps(paused).index(max(paused.intermediate_values))
        resumed = trial_record.resumed_from(c)  # the paused trial's stable checkpoint, before its last rung
        assert resumed["trial"] == paused.number and 0 < resumed["step"] < max(paused.intermediate_values)
        assert f"trial {c.number}: continuing trial {paused.number} from its checkpoint" in out
        assert {s: c.intermediate_values[s] for s in paused.intermediate_values} == paused.intermediate_values
    finished = [c for c in continuations if c.state == TrialState.COMPLETE]
    assert finished

    # a config that paused and went on, run again in a study of its own, unpruned: the same rung
    # values, bit for bit, and the same tokens as its trials trained together
    target = finished[0]
    series = [t for t in trials if t.params == target.params]
    alone = ["study.name=alone", "study.pruner.name=none",
             f'sweep.params={{schedule.lr: "choice({target.params["schedule.lr"]})", '
             f'schedule.warmup_iters: "choice({target.params["schedule.warmup_iters"]})"}}']
    code, out = run_cli([*base, *alone, "study.n_trials=1"], cwd)
    assert code == 0, out
    unpaused = optuna.load_study(study_name="alone", storage=url).get_trials()[0]
    assert unpaused.intermediate_values == target.intermediate_values
    assert sum(trial_record.tokens_trained(t) for t in series) == trial_record.tokens_seen(unpaused)

    # resumed, the finished study trains nothing more; its best trial's long run continues the
    # stable phase its trials trained, pauses and all
    code, out = run_cli([*base, GRID, "study.n_trials=6"], cwd)
    assert code == 0, out
    assert len(study.get_trials()) == len(trials)
    code, out = run_cli([*base, GRID, "mode=best", "schedule.max_iters=90"], cwd)
    assert code == 0, out
    assert f"continuing trial {study.best_trial.number}'s stable phase" in out and "resuming at iteration 36" in out


def test_the_retry_of_an_interrupted_continuation_goes_on_from_the_continuation():
    study = promoting_study()
    run(study, [5.0])
    queue_continuation(study, study.get_trials()[0])
    continuation = study.ask()
    study.tell(continuation, state=TrialState.FAIL)  # interrupted: queued again as a retry of its series
    requeue(study, study.get_trials()[1])
    retry = study.ask()
    assert trial_record.retry_of(retry) == 0 and trial_record.continues(retry) is None
    assert previous_attempt(retry).number == continuation.number
    assert previous_attempt(continuation).number == 0  # and the continuation from its paused trial
    twice = study.get_trials()
    refused = optuna.trial.create_trial(  # a duplicate of the continuation, refused before training
        state=TrialState.FAIL, params=twice[0].params, distributions=twice[0].distributions,
        user_attrs={**trial_record.continuation_attrs(0, 0), trial_record.FAIL_REASON: "not run: trial 1 already continues trial 0"})
    study.add_trial(refused)
    retry_again = optuna.trial.create_trial(state=TrialState.WAITING, params=twice[0].params,
                                            distributions=twice[0].distributions, user_attrs=trial_record.retry_attrs(0))
    study.add_trial(retry_again)
    assert previous_attempt(study.ask()).number == continuation.number  # not the duplicate, which trained nothing
    assert best_at_highest_rung(study.get_trials()) is None  # trial 0 is continued already: never twice


def test_a_long_run_keeps_the_trials_warmup_when_the_command_line_only_nulls_the_share():
    study = optuna.create_study()
    study.enqueue_trial({"schedule.warmup_iters": 10})
    trial = study.ask()
    trial.suggest_int("schedule.warmup_iters", 2, 10)
    trial_record.set_run(trial, run_dir="x", config=json.dumps({"schedule": {"warmup_iters": 10, "warmup_fraction": None}}))
    study.tell(trial, 1.0)
    fidelity = {"study.rungs.cooldown_fraction": 0.2, "study.rungs.shape": "1-sqrt"}
    for cli in (["schedule.warmup_fraction=null"], []):
        assert "schedule.warmup_iters=10" in cooldown_overrides(study.best_trial, fidelity, cli)
    assert "schedule.warmup_iters=10" not in cooldown_overrides(study.best_trial, fidelity, ["schedule.warmup_fraction=0.1"])


def test_a_grid_point_drawn_again_is_not_run_and_a_waiting_continuation_draws_no_point():
    study = optuna.create_study(sampler=optuna.samplers.GridSampler({"x": [1.0]}),
                                pruner=RungHalvingPruner(eta=3, promotions=True))
    study.add_trial(optuna.trial.create_trial(  # the grid's one point, paused at its first rung
        state=TrialState.PRUNED, params={"x": 1.0}, distributions={"x": optuna.distributions.CategoricalDistribution([1.0])},
        intermediate_values={STEPS[0]: 5.0}, system_attrs={"grid_id": 0, "search_space": {"x": [1.0]}},
        user_attrs={trial_record.PAUSED_AT_RUNG: 0, trial_record.RUNG_STEPS: STEPS}))
    queue_continuation(study, study.get_trials()[0])
    assert grid_done(study, study.sampler)  # only a continuation waits: no point is left to draw
    study.ask()  # a worker takes the continuation; another, expecting it, draws the tried point again
    ran = []
    study.optimize(within_budget(lambda t: ran.append(t.number) or 1.0, n_trials=5), n_trials=1, catch=(TrialFailed,))
    again = study.get_trials()[-1]
    assert ran == [] and again.state == TrialState.FAIL and trial_record.refused(again)
    assert "its grid point is trial 0's" in trial_record.fail_reason(again)
    assert not study.get_trials(states=(TrialState.WAITING,))  # refused, not queued again


def test_a_queued_rerun_keeps_the_grid_point_but_not_the_last_heartbeat():
    frozen = optuna.trial.create_trial(state=TrialState.PRUNED, params={}, distributions={},
                                       system_attrs={"grid_id": 3, HEARTBEAT_ATTR: 1.0},
                                       user_attrs={trial_record.PAUSED_AT_RUNG: 0})
    frozen.number = 0
    assert carried_system_attrs(frozen) == {"grid_id": 3}
    assert carried_system_attrs(frozen, retry_history=[0]) == {"grid_id": 3, "retry_history": [0]}


def test_a_continuation_of_a_trial_that_ran_out_of_memory_trains_at_its_halved_micro_batch():
    study = optuna.create_study()
    cfg = dataclasses.replace(TrainConfig(), batch_size=8, gradient_accumulation_steps=2, out_dir="run")
    halved = dataclasses.replace(cfg, batch_size=4, gradient_accumulation_steps=4)
    attempt = optuna.trial.create_trial(state=TrialState.PRUNED, params={}, distributions={}, user_attrs={
        trial_record.OUT_OF_MEMORY: "CUDA out of memory", trial_record.CONFIG: json.dumps(dataclasses.asdict(halved))})
    trial = study.ask()
    went_on = at_attempts_micro_batch(trial, cfg, attempt)
    assert (went_on.batch_size, went_on.gradient_accumulation_steps) == (4, 4)
    assert trial_record.out_of_memory(study.get_trials()[0]) == "CUDA out of memory"
    assert json.loads(trial_record.config_json(study.get_trials()[0]))["batch_size"] == 4
    other = dataclasses.replace(halved, gradient_accumulation_steps=2)  # other tokens per iteration: another run
    attempt.user_attrs[trial_record.CONFIG] = json.dumps(dataclasses.asdict(other))
    assert at_attempts_micro_batch(study.ask(), cfg, attempt) is cfg


def test_two_workers_promote_without_training_a_config_twice(workdir):
    cwd, common = workdir
    url = f"sqlite:///{cwd / 'study.db'}"
    grid = 'sweep.params={schedule.lr: "choice(1e-3, 4e-3, 1.6e-2)", schedule.warmup_iters: "choice(2)"}'
    code, out = run_cli(["+sweep=lr_warmup_iters_grid_bytes", *TINY, *RUNGS, f"study.storage={url}", grid,
                         "study.n_trials=3", "study.workers=2", *common], cwd)
    assert code == 0, out
    trials = optuna.load_study(study_name="lr_warmup_iters_grid_bytes", storage=url).get_trials()
    fresh = [t for t in trials if trial_record.retry_of(t) is None and not trial_record.refused(t)]
    assert sorted(t.params["schedule.lr"] for t in fresh) == [1e-3, 4e-3, 1.6e-2]  # each config drawn once
    assert all(trial_record.refused(t) for t in trials if t.state == TrialState.FAIL)
    by_number = {t.number: t for t in trials}
    continuations = [t for t in trials if trial_record.continues(t) is not None and not trial_record.refused(t)]
    assert continuations and any(t.state == TrialState.COMPLETE for t in trials)
    assert len({trial_record.continues(t) for t in continuations}) == len(continuations)  # each pause continued once
    for c in continuations:
        paused = by_number[trial_record.continues(c)]
        assert {s: c.intermediate_values[s] for s in paused.intermediate_values} == paused.intermediate_values
