"""bench/scale_study.check_study on a stored study with each case it tells apart."""

from __future__ import annotations

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from bench.scale_study import check_study, trained_iters

STEPS = [0, 10, 20]


def _add(study, state, steps=STEPS, **user_attrs):
    done = state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    study.add_trial(create_trial(
        state=state, value=1.0 if state == TrialState.COMPLETE else None,
        params={"lr": 0.001}, distributions={"lr": FloatDistribution(1e-4, 1e-2, log=True)},
        intermediate_values={s: 2.0 for s in steps} if done else {}, user_attrs=user_attrs))


def test_check_study_tells_lost_duplicated_killed_and_short_trials_apart(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=url)
    _add(study, TrialState.COMPLETE)                                        # 0: fine
    _add(study, TrialState.FAIL, steps=[0, 10])                             # 1: killed ...
    _add(study, TrialState.COMPLETE, retry_of=1, resumed_from={"trial": 1, "step": 10})  # 2: ... and resumed
    _add(study, TrialState.FAIL, steps=[], fail_reason="not run: 4 trials before it were finished")  # 3: quota
    _add(study, TrialState.COMPLETE)                                        # 4: ran ...
    _add(study, TrialState.COMPLETE, retry_of=4)                            # 5: ... and again: duplicated
    _add(study, TrialState.FAIL, steps=[0])                                 # 6: killed, never retried: lost
    _add(study, TrialState.COMPLETE, steps=[0, 10])                         # 7: a curve short of a step
    _add(study, TrialState.WAITING)                                         # 8: still queued
    _add(study, TrialState.PRUNED, steps=[0])                               # 9: pruned curves may be short
    check = check_study(url, "s", n_trials=6, expected_steps=STEPS)
    assert check["finished"] == 6 and check["reached_n_trials"] and check["overshoot"] == 0
    assert check["numbers_contiguous"]
    assert check["duplicated_series"] == [4]
    assert check["lost_series"] == [6, 8] and check["lost_series_attempts"] == {6: 1, 8: 1}  # 3 never trained
    assert check["unfinished"] == [8]
    assert check["short_curves"] == [7]
    assert check["killed_attempts"] == [
        {"number": 1, "reported_steps": 2, "retry": 2, "resumed_from": {"trial": 1, "step": 10}},
        {"number": 6, "reported_steps": 1, "retry": None, "resumed_from": None}]
    assert check["fail_reasons"] == {"killed (stale heartbeat)": 2, "not run: (quota)": 1}


def test_trained_iters_reads_train_rows_and_skips_a_line_cut_by_a_kill(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"type": "train", "iter": 1}\n{"type": "eval", "iter": 1}\n'
                                            '{"type": "train", "iter": 2}\n{"type": "tra')
    assert trained_iters(tmp_path) == [1, 2]
    assert trained_iters(tmp_path / "missing") == []
