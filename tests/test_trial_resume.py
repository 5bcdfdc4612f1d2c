"""A killed trial's retry continues its checkpoint: one curve, and only the tokens since the last
evaluation trained twice (real runner processes, SIGKILL mid-trial)."""

from __future__ import annotations

import json
import signal
import socket

import pytest
from optuna.trial import TrialState

from sweeps import trial_record
from sweeps.report import compute_of
from sweeps.trial_record import RESUMED_FROM, TOKENS_SEEN, fail_reason
from tests.heartbeats import stale_trials, wait_for
from tests.test_study_runner import TINY_GPT2, run_cli, runner, sqlite_url, trials_of

TOKENS_PER_ITER = 4 * 32  # TINY_GPT2: batch 4 x block 32


def kill_when(proc, condition, timeout: float, what: str) -> None:
    """SIGKILL the runner `proc` once `condition()` holds (AssertionError naming `what` after `timeout` s)."""
    try:
        wait_for(condition, timeout=timeout, what=what)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    finally:
        proc.kill()


def train_rows(run_dir) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["iter"]: r["loss"] for r in rows if r["type"] == "train"}


@pytest.mark.slow
def test_a_killed_trial_is_continued_from_its_last_checkpoint(workdir):
    cwd, common = workdir
    url = sqlite_url(cwd)
    args = ["+sweep=lr_warmup", *TINY_GPT2, "schedule.max_iters=100", "eval_interval=10", "log_interval=1",
            f"study.storage={url}", "study.n_trials=2", "study.heartbeat_interval=1", "study.grace_period=2",
            *common]
    proc = runner(args, cwd)
    killed_dir = cwd / "outputs" / "studies" / "lr_warmup" / "trial_0001"

    def mid_trial_1():  # three evaluations (0, 10, 20) and an iteration trained after the last
        try:
            trials = trials_of(url, "lr_warmup")
        except KeyError:
            return False
        return (len(trials) == 2 and len(trials[1].intermediate_values) >= 3
                and '"type": "train", "iter": 21,' in (killed_dir / "metrics.jsonl").read_text())

    kill_when(proc, mid_trial_1, 300, "trial 1 to report three evaluations and train on")
    killed = trials_of(url, "lr_warmup")[1]
    killed_rows = train_rows(killed_dir)  # what it trained before the kill, logged every iteration
    wait_for(lambda: stale_trials(url, "lr_warmup", grace_period=2) == [1], what="its heartbeat to go stale")
    code, out = run_cli(args, cwd)
    assert code == 0, out
    trials = trials_of(url, "lr_warmup")
    again = trials[2]
    assert (trials[1].state, again.state) == (TrialState.FAIL, TrialState.COMPLETE)
    assert fail_reason(trials[1]).startswith(f"killed: its worker ({socket.gethostname()} pid {proc.pid})")
    resumed = again.user_attrs[RESUMED_FROM]
    assert resumed["trial"] == 1 and resumed["step"] in killed.intermediate_values and resumed["step"] > 0
    assert f"continuing trial 1 from its checkpoint at {resumed['step']:,} tokens" in out
    # one curve: the attempt's evaluations up to its checkpoint, then the retry's own
    assert sorted(again.intermediate_values) == list(range(0, 100 * TOKENS_PER_ITER + 1, 10 * TOKENS_PER_ITER))
    assert {s: v for s, v in again.intermediate_values.items() if s <= resumed["step"]} == \
        {s: v for s, v in killed.intermediate_values.items() if s <= resumed["step"]}
    # the iterations trained twice (after the checkpoint, before the kill) trained the same
    start = resumed["step"] // TOKENS_PER_ITER
    again_rows = train_rows(cwd / "outputs" / "studies" / "lr_warmup" / "trial_0002")
    twice = [i for i in killed_rows if i > start]
    assert twice and all(again_rows[i] == killed_rows[i] for i in twice), [(i, killed_rows[i], again_rows[i]) for i in twice]
    assert min(again_rows) == 1 and max(again_rows) == 100  # its metrics hold the whole run once
    # compute: the continued tokens counted once (the attempt's up to its last report, the retry's after)
    used, _ = compute_of(__import__("optuna").load_study(study_name="lr_warmup", storage=url))
    expected = (trials[0].user_attrs[TOKENS_SEEN] + max(killed.intermediate_values)
                + again.user_attrs[TOKENS_SEEN] - resumed["step"])
    assert used == expected


@pytest.mark.slow
def test_a_killed_cooldown_trial_continues_its_stable_phase_with_its_rungs_carried(workdir):
    cwd, common = workdir
    url = sqlite_url(cwd)
    # asha that prunes: with promotions a second trial would pause at its first rung, never be killed past it
    args = ["+sweep=lr_warmup", *TINY_GPT2, "schedule.max_iters=90", "eval_interval=9", "study.fidelity=cooldown",
            "study.rungs.count=3", "study.rungs.promotions=false", f"study.storage={url}", "study.n_trials=2", "study.heartbeat_interval=1",
            "study.grace_period=2", *common]
    proc = runner(args, cwd)

    def first_rung_of_trial_1():
        try:
            trials = trials_of(url, "lr_warmup")
        except KeyError:
            return False
        return len(trials) == 2 and len(trials[1].intermediate_values) >= 1

    kill_when(proc, first_rung_of_trial_1, 600, "trial 1 to report its first rung")
    killed = trials_of(url, "lr_warmup")[1]
    assert killed.state == TrialState.RUNNING and killed.intermediate_values  # killed between two rungs
    wait_for(lambda: stale_trials(url, "lr_warmup", grace_period=2) == [1], what="its heartbeat to go stale")
    code, out = run_cli(args, cwd)
    assert code == 0, out
    again = trials_of(url, "lr_warmup")[2]
    assert again.state == TrialState.COMPLETE and again.user_attrs[RESUMED_FROM]["trial"] == 1
    horizons = [10 * TOKENS_PER_ITER, 30 * TOKENS_PER_ITER, 90 * TOKENS_PER_ITER]
    cooldowns = dict(zip(horizons, (2, 6, 18)))  # iterations: 20% of each horizon
    first = min(killed.intermediate_values)
    resumed_at = again.user_attrs[RESUMED_FROM]["step"] // TOKENS_PER_ITER
    assert first * 0.8 // TOKENS_PER_ITER <= resumed_at <= 72  # past that rung's cooldown start, before the last's
    # the rungs the attempt reported are carried as they were; the retry reports the rest, the last included
    assert {s: again.intermediate_values[s] for s in killed.intermediate_values} == killed.intermediate_values
    assert set(again.intermediate_values) == {s for s in horizons if s >= first}
    assert again.value == again.intermediate_values[horizons[-1]]
    assert again.user_attrs["cooldown_tokens"] == sum(cooldowns[s] for s in again.intermediate_values) * TOKENS_PER_ITER
    # the stable evaluations the retry carried keep their SE and LR area, as the attempt recorded them
    carried = {s for s in trial_record.stable_val_loss(again) if s <= again.user_attrs[RESUMED_FROM]["step"]}
    assert carried and carried <= set(trial_record.val_loss_se(again)) and carried <= set(trial_record.lr_area(again))
    for attrs in (trial_record.val_loss_se, trial_record.lr_area):
        recorded = {s: v for s, v in attrs(killed).items() if s in carried}
        assert recorded and {s: attrs(again)[s] for s in recorded} == recorded


def test_an_evaluation_logged_but_never_reported_before_the_kill_is_carried_from_the_metrics_file(tmp_path):
    """The trainer logs an evaluation, writes the checkpoint, then reports: a kill in between leaves
    the checkpoint past the attempt's last report. The retry takes that evaluation from the
    attempt's metrics.jsonl, so its curve has no hole where it continues."""
    import optuna
    from optuna.distributions import FloatDistribution

    from sweeps import trial_record
    from sweeps.objective import batch_group_means
    from sweeps.trial_resume import continue_previous_attempt, report_carried
    from tests.test_train import tiny_config
    from trainer import logged_evals, train

    attempt_cfg = tiny_config(tmp_path, **{"out_dir": str(tmp_path / "trial_0000")})
    train(attempt_cfg, log=lambda line: None)  # checkpoints at every evaluation, the last at 40
    logged = logged_evals(tmp_path / "trial_0000" / "metrics.jsonl")
    assert [m.iter for m in logged] == [0, 10, 20, 30, 40]
    reported = logged[:-1]  # killed after the checkpoint at iteration 40, before reporting it
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'study.db'}", study_name="s")
    x = FloatDistribution(0.0, 1.0)
    study.add_trial(optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL, params={"x": 0.5}, distributions={"x": x},
        intermediate_values={m.tokens: m.val_loss for m in reported},
        user_attrs={trial_record.RUN_DIR: attempt_cfg.out_dir,
                    trial_record.VAL_LOSS_SE: {str(m.tokens): m.val_loss_se for m in reported}}))
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING, params={"x": 0.5},
                                              distributions={"x": x}, user_attrs=trial_record.retry_attrs(0)))
    retry = study.ask()
    retry_cfg, continuation = continue_previous_attempt(retry, tiny_config(tmp_path, **{"out_dir": str(tmp_path / "trial_0001")}))
    assert retry_cfg.init_from == "resume" and continuation.step == logged[-1].tokens
    report_carried(retry, trial_record.EvalRecorder(retry), continuation, lambda losses: batch_group_means(losses, 2))
    frozen = study.trials[1]
    assert frozen.intermediate_values == {m.tokens: m.val_loss for m in logged}
    assert trial_record.val_loss_se(frozen)[logged[-1].tokens] == logged[-1].val_loss_se
    assert trial_record.val_batch_losses(frozen) == {logged[-1].tokens: batch_group_means(logged[-1].val_batch_losses, 2)}
    result = train(retry_cfg, log=lambda line: None)  # nothing left to train: the curve is the attempt's
    assert result.iters == 40
