"""The study runner end to end: real sweeps of tiny GPTs on the sample corpus, real SQL storage."""

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
import requests
from optuna.trial import TrialState

from bench.pruner_replay import parse_curves
from bench.record_curves import curves_of, lr_areas
from sweeps.trial_quota import grid_done, within_budget
from sweeps.compose import compose_study_config
from sweeps.config import StudyError
from sweeps.objective import (BATCH_LOSSES_CHARS, MAX_BATCH_GROUPS, TrialFailed,
                              batch_group_means, batch_groups)
from sweeps.artifacts import ARTIFACT_DIR
from sweeps.report import study_report
from sweeps.retries import MAX_RETRIES, requeue
from sweeps.runner import run
from sweeps.search_space import SearchSpaceError
from sweeps.storage import StorageError
from sweeps.trial_record import BASELINE_ATTR
from tests.dashboard import start_dashboard, stop
from tests.configs import TINY, TINY_GPT2  # noqa: F401 - the other test modules import them from here
from tests.test_evidence import tokenize_once
from tests.heartbeats import stale_trials, wait_for
from tests.postgres import PG_URL, needs_postgres
from trainer.config import ScheduleConfig
from trainer.schedule import lr_sum

ROOT = Path(__file__).resolve().parents[1]
USER_ATTRS = {"num_params", "num_params_non_embedding", "tokens_seen", "epochs", "ms_per_iter", "train_val_gap",
              "stop_reason", "run_dir", "checkpoint", "config", "warmup_step", "budget_step", "val_loss_se",
              "lr_area", "lr_area_budget", "val_batch_losses", "val_batches"}


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path / 'study.db'}"


def runner(args, cwd, **popen):
    return subprocess.Popen([sys.executable, str(ROOT / "study_runner.py"), *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **popen)


def run_cli(args, cwd, timeout=600):
    proc = runner(args, cwd)
    out, _ = proc.communicate(timeout=timeout)
    return proc.returncode, out


def trials_of(url, name):
    return optuna.load_study(study_name=name, storage=url).get_trials(deepcopy=False)


def test_six_trial_sweep_records_everything_and_resumes_without_overshoot(workdir):
    cwd, common = workdir
    url = sqlite_url(cwd)
    args = ["+sweep=lr_warmup", *TINY, f"study.storage={url}", "study.n_trials=6", *common]
    per_iter = 4 * 32  # TINY's batch x block
    code, out = run_cli(args, cwd)
    assert code == 0, out
    trials = trials_of(url, "lr_warmup")
    assert len(trials) == 6 and all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert trials[0].user_attrs[BASELINE_ATTR] and trials[0].state == TrialState.COMPLETE
    for t in trials:
        assert USER_ATTRS <= set(t.user_attrs), USER_ATTRS - set(t.user_attrs)
        # reported at training tokens seen: 5 iterations x 4 x 32 tokens apart
        assert sorted(t.intermediate_values)[:2] == [0, 5 * per_iter]
        # the LR summed over the tokens trained, at every reported step, as the schedule gives it
        schedule = ScheduleConfig(**json.loads(t.user_attrs["config"])["schedule"])
        for step in t.intermediate_values:
            assert t.user_attrs["lr_area"][str(step)] == pytest.approx(lr_sum(schedule, 0, step // per_iter) * per_iter)
        assert t.user_attrs["lr_area_budget"] == pytest.approx(lr_sum(schedule, 0, 20) * per_iter)
        # each evaluation's loss on each of the eval batches, which every trial shares
        for step, value in t.intermediate_values.items():
            losses = t.user_attrs["val_batch_losses"][str(step)]
            assert len(losses) == 2 and sum(losses) / 2 == pytest.approx(value, abs=1e-5)
    assert len({t.user_attrs["val_batches"] for t in trials}) == 1
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    for t in complete:
        assert Path(t.user_attrs["checkpoint"]).is_file()
        assert json.loads(t.user_attrs["config"])["model"]["n_embd"] == 32
        assert t.value == min(t.intermediate_values.values())
    assert "gain over the baseline" in out and "optuna-dashboard" in out

    # bench/record_curves.py exports the full curves for the pruner replay, with the LR sums;
    # for trials recorded without them it recomputes them from the trial's config.
    curves = curves_of(optuna.load_study(study_name="lr_warmup", storage=url))
    replayable = parse_curves(curves)
    full = [t for t in complete if t.user_attrs["status"] == "completed"]
    assert len(replayable) == len(full) >= 1
    for t, curve in zip(full, replayable):
        assert curve.lr_area == [t.user_attrs["lr_area"][str(st)] for st in sorted(t.intermediate_values)]
        assert curve.batch_losses == [t.user_attrs["val_batch_losses"][str(st)]
                                      for st in sorted(t.intermediate_values)]
        assert curve.val_batches == t.user_attrs["val_batches"]
        older = optuna.trial.create_trial(
            params=t.params, distributions=t.distributions, value=t.value,
            intermediate_values=t.intermediate_values,
            user_attrs={k: v for k, v in t.user_attrs.items() if k not in ("lr_area", "lr_area_budget")})
        area, budget = lr_areas(older, sorted(t.intermediate_values))
        assert area == pytest.approx(curve.lr_area) and budget == pytest.approx(curve.lr_area_budget)

    code, out = run_cli(args, cwd)  # resumed: already holds 6 finished trials
    assert code == 0 and len(trials_of(url, "lr_warmup")) == 6
    code, out = run_cli(args[:-2] + ["study.n_trials=7", common[0]], cwd)
    assert code == 0 and len(trials_of(url, "lr_warmup")) == 7


def test_batch_losses_are_recorded_as_at_most_32_means_of_equal_runs_within_a_size_budget():
    assert batch_groups(eval_iters=8, n_evals=21) == 8  # the sweeps here: every batch
    assert batch_groups(eval_iters=200, n_evals=21) == MAX_BATCH_GROUPS == 32  # nanoGPT's eval_iters
    assert batch_groups(eval_iters=200, n_evals=600) == 6  # 600 evaluations x (6 x ~10 + 12) chars
    assert batch_groups(eval_iters=200, n_evals=5000) == 0  # too many to pair: not recorded
    assert batch_group_means([1.0, 2.0, 3.0], 3) == [1.0, 2.0, 3.0]
    means = batch_group_means([float(i % 7) for i in range(200)], 32)
    assert len(means) == 32
    assert sum(means) / 32 == pytest.approx(sum(i % 7 for i in range(200)) / 200, abs=0.02)
    # a trial's whole record stays within the budget
    record = {str(step * 1_024_000): batch_group_means([16.123456789] * 200, 6) for step in range(600)}
    assert len(json.dumps(record)) <= BATCH_LOSSES_CHARS


@pytest.mark.parametrize("sig,victim", [(signal.SIGKILL, 1), (signal.SIGINT, 0)])
def test_a_study_killed_mid_trial_resumes_and_runs_that_trial_again(workdir, sig, victim):
    cwd, common = workdir
    url = sqlite_url(cwd)
    args = ["+sweep=lr_warmup", *TINY_GPT2, "schedule.max_iters=60", "eval_interval=10", f"study.storage={url}",
            "study.n_trials=3", "study.heartbeat_interval=1", "study.grace_period=2", *common]
    proc = runner(args, cwd)

    def mid_victim():
        try:
            trials = trials_of(url, "lr_warmup")
        except KeyError:
            return False
        return len(trials) == victim + 1 and len(trials[victim].intermediate_values) >= 2

    try:
        wait_for(mid_victim, timeout=300, what=f"trial {victim} to report")
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    trials = trials_of(url, "lr_warmup")
    killed = trials[victim]
    assert all(t.state == TrialState.COMPLETE for t in trials[:victim])
    finished_before = [(t.number, t.value, dict(t.intermediate_values)) for t in trials[:victim]]
    if sig == signal.SIGINT:  # Ctrl-C: the trial is marked FAIL and queued at once; the process exits 130
        assert proc.returncode == 130 and "run the same command to resume" in out
        assert killed.state == TrialState.FAIL and "interrupted" in killed.user_attrs["fail_reason"]
        assert trials[-1].state == TrialState.WAITING
    else:  # killed: the next worker marks it FAIL, and queues it, once its heartbeat is stale
        assert killed.state == TrialState.RUNNING
        wait_for(lambda: stale_trials(url, "lr_warmup", grace_period=2) == [victim], what="its heartbeat to go stale")

    if victim == 1:  # trials of another length would not be comparable with the study's: refused
        code, out = run_cli([a.replace("schedule.max_iters=60", "schedule.max_iters=20") for a in args], cwd)
        assert code == 1 and "schedule.max_iters=60, now 20" in out and "study.name=NEW" in out
        assert sum(t.state == TrialState.COMPLETE for t in trials_of(url, "lr_warmup")) == 1  # none trained
    code, out = run_cli(args, cwd)
    assert code == 0, out
    trials = trials_of(url, "lr_warmup")
    assert [t.state for t in trials[:victim + 1]] == [TrialState.COMPLETE] * victim + [TrialState.FAIL]
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 3  # the total reached
    # nothing lost: what finished before the kill is stored as it was
    assert [(t.number, t.value, dict(t.intermediate_values)) for t in trials[:victim]] == finished_before
    again = trials[victim + 1]  # the next trial runs the interrupted one's params again
    assert again.user_attrs["retry_of"] == victim and again.params == killed.params
    assert again.state in (TrialState.COMPLETE, TrialState.PRUNED)
    if victim == 0:  # an interrupted baseline stays the baseline: the report still compares with it
        assert again.user_attrs[BASELINE_ATTR] and again.state == TrialState.COMPLETE
        assert f"gain over the baseline (trial {again.number}" in out or "no trial beat the baseline" in out


def test_a_retried_trial_is_retried_at_most_max_retries_times(tmp_path):
    study = optuna.create_study(study_name="retries", storage=sqlite_url(tmp_path))
    failed = study.ask({"x": optuna.distributions.FloatDistribution(0.0, 1.0)})
    study.tell(failed, state=TrialState.FAIL)
    series = [study.get_trials()[-1]]
    while requeue(study, series[-1]):
        again = study.ask()  # the queued trial comes first, with its params
        assert again.suggest_float("x", 0.0, 1.0) == series[0].params["x"]
        study.tell(again, state=TrialState.FAIL)
        series.append(study.get_trials()[-1])
    assert [t.user_attrs.get("retry_of") for t in series] == [None, 0, 0][:len(series)]
    assert len(series) == 1 + MAX_RETRIES


def test_a_trial_asked_after_another_worker_took_the_last_one_fails_without_training(tmp_path):
    url = sqlite_url(tmp_path)
    study = optuna.create_study(study_name="race", storage=url)
    study.tell(study.ask(), 1.0)
    other_worker = optuna.load_study(study_name="race", storage=url)
    other_worker.ask()  # RUNNING: it took trial 1, the last of n_trials=2
    trained = []
    guarded = within_budget(lambda trial: trained.append(trial.number) or 0.5, n_trials=2)
    study.optimize(guarded, n_trials=1, catch=(TrialFailed,))
    mine = study.get_trials(deepcopy=False)[-1]
    assert trained == [] and mine.number == 2 and mine.state == TrialState.FAIL
    assert "study.n_trials=2" in mine.user_attrs["fail_reason"]

    roomier = within_budget(lambda trial: trained.append(trial.number) or 0.5, n_trials=4)
    study.optimize(roomier, n_trials=1, catch=(TrialFailed,))  # trials 0 and 1 before it: runs
    assert trained == [3] and study.get_trials(deepcopy=False)[-1].state == TrialState.COMPLETE


def test_a_grid_point_drawn_after_the_last_place_was_taken_is_queued_again(tmp_path):
    url = sqlite_url(tmp_path)
    grid = optuna.samplers.GridSampler({"x": [1, 2, 3]}, seed=0)
    study = optuna.create_study(study_name="grid-race", storage=url, sampler=grid)
    other_worker = optuna.load_study(study_name="grid-race", storage=url,
                                     sampler=optuna.samplers.GridSampler({"x": [1, 2, 3]}, seed=0))
    taken = other_worker.ask()
    taken.suggest_categorical("x", [1, 2, 3])  # RUNNING: the last of n_trials=1
    ran = []

    def objective(trial):
        ran.append(trial.suggest_categorical("x", [1, 2, 3]))
        return float(ran[-1])

    study.optimize(within_budget(objective, n_trials=1), n_trials=1, catch=(TrialFailed,))
    not_run = study.get_trials(deepcopy=False)[1]
    assert ran == [] and not_run.state == TrialState.FAIL
    other_worker.tell(taken, 0.0)
    while not grid_done(study, grid):
        study.optimize(within_budget(objective, n_trials=3), n_trials=1, catch=(TrialFailed,))
    assert sorted(ran + [taken.params["x"]]) == [1, 2, 3]  # every point ran, the not-run one too


def test_trial_memory_bench_reads_the_rss_after_every_trial(tmp_path, capsys):
    from bench.trial_memory import main

    out = tmp_path / "rss.json"
    assert main(["--trials", "2", "--iters", "2", "--workdir", str(tmp_path / "work"), "--json", str(out)]) == 0
    rss = json.loads(out.read_text())["rss_mb"]
    assert len(rss) == 2 and all(r > 50 for r in rss)  # a process that imported torch
    assert "2 trials of 2 iterations" in capsys.readouterr().out


def test_report_says_when_no_trial_beat_the_baseline():
    study = optuna.create_study()
    for value, baseline in [(6.0, True), (6.2, False)]:
        trial = study.ask()
        if baseline:
            trial.set_user_attr(BASELINE_ATTR, "outside the search space")
        study.tell(trial, value)
    assert "no trial beat the baseline (trial 0, val loss 6.0000)" in study_report(study)
    study.tell(study.ask(), 5.9)
    assert "gain over the baseline (trial 0, val loss 6.0000): +0.1000 with trial 2" in study_report(study)


def test_a_grid_smaller_than_n_trials_runs_each_point_once(workdir, capsys):
    cfg, overrides = compose(workdir, "study.sampler.name=grid", "study.n_trials=4")
    cfg.sweep.params = {"schedule.lr": "choice(1e-3, 2e-3)"}
    study = run(cfg, overrides)
    assert sorted(t.params["schedule.lr"] for t in study.trials) == [1e-3, 2e-3]
    assert "every point of the grid has been tried" in capsys.readouterr().out


def test_resuming_a_study_whose_param_changed_kind_fails_before_any_training(workdir):
    cfg, overrides = compose(workdir, "study.n_trials=2")
    study = optuna.create_study(study_name="lr_warmup", storage=cfg.study.storage)
    linear = study.ask({"schedule.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2)})
    study.tell(linear, 5.0)  # the sweep searches lr on a log scale now
    with pytest.raises(StudyError, match=r"'schedule.lr' is now .*log=True.*study.name=NEW"):
        run(cfg, overrides)
    assert len(trials_of(cfg.study.storage, "lr_warmup")) == 1  # nothing ran, nothing was added


def test_resuming_with_other_fixed_settings_is_refused_but_searched_values_may_change(workdir):
    run(*compose(workdir, "study.n_trials=1"))
    # lr is searched, and the searched warmup share overrides warmup_iters: other values are comparable
    run(*compose(workdir, "study.n_trials=2", "schedule.lr=0.002", "schedule.warmup_iters=3"))
    with pytest.raises(StudyError, match=r"model.n_embd=32, now 64.*study.name=NEW"):
        run(*compose(workdir, "study.n_trials=3", "model.n_embd=64"))
    study = run(*compose(workdir, "study.n_trials=3", "model.n_embd=64", "study.name=wider"))
    assert len(study.trials) == 3


def test_two_workers_started_together_share_one_study(workdir):
    """Two runner processes on one new SQLite study: one baseline, every draw different, the
    total reached exactly (a trial asked when the last one was already taken is not run)."""
    cwd, common = workdir
    url = sqlite_url(cwd)
    args = ["+sweep=lr_warmup", *TINY, f"study.storage={url}", "study.n_trials=5", *common]
    tokenize_once(common)  # so that both workers start training at once
    workers = [runner(args, cwd) for _ in range(2)]
    outs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs
    trials = [t for t in trials_of(url, "lr_warmup") if t.state != TrialState.FAIL]
    assert all(t.user_attrs["fail_reason"].startswith("not run")
               for t in trials_of(url, "lr_warmup") if t.state == TrialState.FAIL)
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    assert len(trials) == 5
    assert [bool(t.user_attrs.get(BASELINE_ATTR)) for t in trials] == [True] + [False] * (len(trials) - 1)
    draws = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(draws)) == len(draws)
    assert len({t.user_attrs["run_dir"] for t in trials}) == len(trials)  # no run dir shared


@needs_postgres
def test_the_same_sweep_on_postgresql(workdir):
    cwd, common = workdir
    name = f"pg_sweep_{uuid.uuid4().hex[:8]}"
    code, out = run_cli(["+sweep=lr_warmup", *TINY, f"study.storage={PG_URL}", f"study.name={name}",
                         "study.n_trials=3", *common], cwd)
    try:
        assert code == 0, out
        trials = trials_of(PG_URL, name)
        assert len(trials) == 3 and trials[0].user_attrs[BASELINE_ATTR]
        assert all(t.intermediate_values for t in trials)
    finally:
        optuna.delete_study(study_name=name, storage=PG_URL)


def compose(workdir, *extra):
    """The composed config and the overrides that made it (the runner composes trials from them)."""
    cwd, common = workdir
    overrides = ["+sweep=lr_warmup", *TINY, f"study.storage={sqlite_url(cwd)}", *common, *extra]
    return compose_study_config(overrides), overrides


@pytest.mark.parametrize("params,error,message", [
    ({"schedule.lrr": "interval(1e-4, 1e-2)"}, SearchSpaceError, "schedule.lrr"),
    ({"model": "choice(nano, huge)"}, SearchSpaceError, "huge"),
    ({"schedule.lr": "interval(1e-2, 1e-4)"}, SearchSpaceError, "schedule.lr"),
    ({"schedule.lr": "tag(log, interval(0, 1e-2))"}, SearchSpaceError, "log"),
])
def test_bad_search_spaces_fail_before_any_training(workdir, params, error, message):
    cfg, overrides = compose(workdir)
    cfg.sweep.params = params
    with pytest.raises(error, match=message):
        run(cfg, overrides)
    assert not (workdir[0] / "outputs").exists() and not (workdir[0] / "study.db").exists()


@pytest.mark.parametrize("override,message", [
    ("study.sampler.name=annealing", "annealing.*tpe, random, cmaes, qmc, grid"),
    ("study.pruner.name=sometimes", "sometimes.*plateau"),
    ("study.pruner.percentile=120", "percentile must be in \\[0, 100\\], got 120"),
    ("mode=replay", "mode='replay'.*sweep, best"),
    ("study.direction=maximize", "study.direction='maximize' is invalid.*valid: minimize"),
])
def test_bad_study_settings_fail_before_any_training(workdir, override, message):
    with pytest.raises(StudyError, match=message):
        run(*compose(workdir, override))
    assert not (workdir[0] / "study.db").exists()


def test_a_bad_setting_on_the_command_line_prints_one_error_line_not_a_traceback(workdir):
    cwd, common = workdir
    code, out = run_cli(["+sweep=lr_warmup", "study.pruner.name=medain", *common], cwd)
    assert code == 1 and "Traceback" not in out
    assert out.strip().splitlines()[-1].startswith("error: study.pruner: unknown pruner name 'medain'")


def test_unreachable_storage_fails_without_printing_the_password(workdir):
    with pytest.raises(StorageError) as info:
        run(*compose(workdir, "study.storage=postgresql://sweeper:s3cretpw@127.0.0.1:1/studies"))
    assert "s3cretpw" not in str(info.value) and "127.0.0.1:1" in str(info.value)
    assert not (workdir[0] / "outputs").exists()


def test_unknown_or_missing_sweep_lists_the_known_ones(workdir):
    cwd, common = workdir
    code, out = run_cli(["+sweep=lr_warmpu"], cwd)
    assert code != 0 and "lr_warmup" in out and "regularization" in out
    code, out = run_cli([], cwd)
    assert code != 0 and "add +sweep=NAME" in out and "lr_warmup" in out


def test_trial_failures_never_end_the_study(workdir):
    # a space of which no point can run is refused before any trial (the plan composes each)
    cfg, overrides = compose(workdir, "study.n_trials=2", "study.baseline=false")
    cfg.sweep.params = {"model.n_head": "choice(3)"}
    with pytest.raises(StudyError, match="no trial of the sweep can run: .*must be divisible by model.n_head=3"):
        run(cfg, overrides)
    assert trials_of(cfg.study.storage, "lr_warmup") == []

    # an impossible sampled point fails at once with its reason, and the study goes on
    cfg, overrides = compose(workdir, "study.name=some_impossible", "study.n_trials=3", "study.baseline=false",
                             "study.sampler.name=random")
    cfg.sweep.params = {"model.n_head": "choice(2, 3)"}
    run(cfg, overrides)
    trials = trials_of(cfg.study.storage, "some_impossible")
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert failed and all(t.params["model.n_head"] == 3 for t in failed)  # seed 0 draws 3 at least once
    assert "model.n_embd=32 is invalid: must be divisible by model.n_head=3" in failed[0].user_attrs["fail_reason"]
    assert [t.params["model.n_head"] for t in trials if t.state == TrialState.COMPLETE] == [2, 2, 2]

    # a diverged trial is pruned with the reason
    cfg, overrides = compose(workdir, "study.name=diverge", "study.n_trials=1", "study.baseline=false",
                             "optim.grad_clip=0", "schedule.warmup_iters=100")
    cfg.sweep.params = {"schedule.lr": "choice(10000.0)"}
    run(cfg, overrides)
    [diverged] = trials_of(cfg.study.storage, "diverge")
    assert diverged.state == TrialState.PRUNED and diverged.user_attrs["status"] == "diverged"
    # out of memory: tests/test_out_of_memory.py, under a real memory limit


def test_best_trial_reruns_long_resumes_after_interruption_and_exports_its_config(workdir, capsys):
    cwd, common = workdir
    url = sqlite_url(cwd)
    run(*compose(workdir, "study.n_trials=2"))
    best = optuna.load_study(study_name="lr_warmup", storage=url).best_trial

    # 1,000 byte-level iterations: a few seconds, so the Ctrl-C lands mid-run
    long_run = ["+sweep=lr_warmup", *TINY, f"study.storage={url}", *common, "mode=best", "schedule.max_iters=1000",
                "eval_interval=10"]
    proc = runner(long_run, cwd)  # the real CLI, interrupted as a terminal's Ctrl-C does
    run_dir = cwd / "outputs" / "studies" / "lr_warmup" / "best_run"
    metrics = run_dir / "metrics.jsonl"
    try:
        wait_for(lambda: metrics.is_file() and '"iter": 30' in metrics.read_text()
                 and (run_dir / "ckpt.pt").is_file(), timeout=300, what="the long run to pass iteration 30")
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0

    capsys.readouterr()
    result = run(compose_study_config(long_run), long_run)  # the same command again
    out = capsys.readouterr().out
    assert result.status == "completed", out
    assert "resuming at iteration" in out and f"best trial {best.number}" in out

    # the exported config reproduces the long run from scratch (CPU runs are deterministic)
    config = run_dir.parent / "best_config.yaml"
    repro = subprocess.run([sys.executable, "-m", "trainer", f"--config-path={config.parent}",
                            f"--config-name={config.stem}", f"out_dir={cwd / 'repro'}"],
                           cwd=cwd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert repro.returncode == 0, repro.stderr
    assert float(repro.stdout.rsplit("best val loss ", 1)[1].split()[0]) == pytest.approx(result.best_val_loss,
                                                                                         abs=1e-4)

    # another command (or a new best trial) never resumes this run with its own settings
    stamp = (run_dir / "ckpt.pt").stat().st_mtime_ns, config.read_text()
    other = long_run + ["model.n_embd=64", "schedule.lr=1e-3"]
    with pytest.raises(StudyError) as refused:
        run(compose_study_config(other), other)
    message = str(refused.value)
    assert "model.n_embd=32, now 64" in message and "schedule.lr=" in message and "move or delete" in message
    assert ((run_dir / "ckpt.pt").stat().st_mtime_ns, config.read_text()) == stamp


def test_optuna_dashboard_shows_the_runners_study(tiny_study):
    cwd, url, name = tiny_study
    dashboard, base = start_dashboard(url, cwd / ARTIFACT_DIR)
    api = f"{base}/api"
    try:
        [summary] = [s for s in requests.get(f"{api}/studies", timeout=10).json()["study_summaries"]
                     if s["study_name"] == name]
        detail = requests.get(f"{api}/studies/{summary['study_id']}", timeout=10).json()
        assert detail["objective_names"] == ["val loss"]  # what its charts call the objective
        trials = detail["trials"]
        assert len(trials) == 4
        assert all(len(t["intermediate_values"]) >= 4 for t in trials)  # the val-loss curves
        assert {a["key"] for a in trials[0]["user_attrs"]} >= {"stop_reason", "num_params", "epochs", "baseline"}
        assert {t["state"] for t in trials} <= {"Complete", "Pruned"}
        for t in trials:  # each trial's files, served from the artifact store
            files = {a["filename"]: a for a in t["artifacts"]}
            assert set(files) == {"config.yaml", "metrics.jsonl", "curve.png"}, files
            png = requests.get(f"{base}/artifacts/{summary['study_id']}/{t['trial_id']}/"
                               f"{files['curve.png']['artifact_id']}", timeout=10)
            assert png.ok and png.content.startswith(b"\x89PNG")
    finally:
        stop(dashboard)
