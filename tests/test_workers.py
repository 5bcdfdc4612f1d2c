"""study.workers=N: worker processes on this machine on one study; Ctrl-C stops them all cleanly."""

from __future__ import annotations

import signal

import optuna
import pytest
from optuna.trial import TrialState

from sweeps.compose import compose_study_config
from sweeps.config import StudyError
from sweeps.runner import run
from sweeps.trial_record import BASELINE_ATTR, FAIL_REASON, RETRY_OF
from sweeps.workers import _worker_env, worker_count
from tests.test_study_runner import TINY, TINY_GPT2, run_cli, runner, sqlite_url, trials_of, wait_for


def test_workers_auto_is_one_per_visible_gpu_and_bad_values_are_one_error():
    assert worker_count("auto", visible_gpus=0) == 1 and worker_count("auto", visible_gpus=4) == 4
    assert worker_count("3") == 3
    for bad in ("0", "-2", "many"):
        with pytest.raises(StudyError, match=f"study.workers='{bad}' is invalid: a positive integer, or auto"):
            worker_count(bad)


def test_each_worker_gets_its_own_gpu_or_a_share_of_the_cores(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert [_worker_env(i, 4, gpus=4)["CUDA_VISIBLE_DEVICES"] for i in range(4)] == ["0", "1", "2", "3"]
    assert [_worker_env(i, 3, gpus=2)["CUDA_VISIBLE_DEVICES"] for i in range(3)] == ["0", "1", "0"]
    assert _worker_env(0, 4, gpus=0)["OMP_NUM_THREADS"] == "2"


@pytest.mark.slow
def test_two_workers_share_one_study_and_each_logs_its_trials(workdir):
    cwd, common = workdir
    url = sqlite_url(cwd)
    overrides = ["+sweep=lr_warmup", *TINY, f"study.storage={url}", "study.n_trials=4", "study.workers=2", *common]
    study = run(compose_study_config(overrides), overrides)
    trials = study.get_trials()
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials) == 4
    assert len({t.number for t in trials}) == len(trials) and sum(bool(t.user_attrs.get(BASELINE_ATTR))
                                                                   for t in trials) == 1
    logs = [(cwd / "outputs" / "studies" / "lr_warmup" / "workers" / f"worker_{i}.log").read_text() for i in (0, 1)]
    ran = [{t.number for t in trials if f"trial {t.number} (" in log} for log in logs]
    assert ran[0] and ran[1] and not ran[0] & ran[1], logs  # both trained, no trial twice
    assert (cwd / "outputs" / "studies" / "lr_warmup" / "report" / "report.md").is_file()


@pytest.mark.slow
def test_ctrl_c_stops_every_worker_and_queues_their_trials(workdir):
    cwd, common = workdir
    url = sqlite_url(cwd)
    args = ["+sweep=lr_warmup", *TINY_GPT2, "schedule.max_iters=200", "eval_interval=10", f"study.storage={url}",
            "study.n_trials=2", "study.workers=2", *common]
    proc = runner(args, cwd)

    def both_running():
        try:
            running = [t for t in trials_of(url, "lr_warmup") if t.state == TrialState.RUNNING]
        except KeyError:
            return False
        return len(running) == 2 and all(len(t.intermediate_values) >= 2 for t in running)

    try:
        wait_for(both_running, timeout=300, what="both workers to be mid-trial")
        proc.send_signal(signal.SIGINT)  # the parent only, as a terminal's Ctrl-C reaches it
        out, _ = proc.communicate(timeout=200)
    finally:
        proc.kill()
    assert proc.returncode == 130, out
    trials = trials_of(url, "lr_warmup")
    interrupted = [t for t in trials if t.state == TrialState.FAIL]
    queued = [t for t in trials if t.state == TrialState.WAITING]
    assert len(interrupted) == 2 and all("interrupted" in t.user_attrs[FAIL_REASON] for t in interrupted)
    assert sorted(t.user_attrs[RETRY_OF] for t in queued) == sorted(t.number for t in interrupted)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    code, out = run_cli(args, cwd)  # the same command resumes: the two queued trials run
    assert code == 0, out
    study = optuna.load_study(study_name="lr_warmup", storage=url)
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials) == 2
