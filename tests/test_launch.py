"""launcher=local|slurm (submitit): a study's workers as a job array; deploy/k8s's Indexed Job."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from sweeps.compose import compose_study_config
from sweeps.config import StudyError
from sweeps.launch import executor_parameters, worker_overrides
from sweeps.runner import run
from sweeps.trial_record import BASELINE_ATTR
from tests.test_study_runner import TINY, sqlite_url

ROOT = Path(__file__).resolve().parents[1]


def test_a_task_runs_the_same_command_without_the_launcher():
    assert worker_overrides(["+sweep=lr_warmup", "launcher=slurm", "launcher.array_size=8", "model=mini",
                             "study.n_trials=30"]) == ["+sweep=lr_warmup", "model=mini", "study.n_trials=30"]


@pytest.mark.parametrize("override,message", [
    ("launcher.array_size=0", "launcher.array_size=0 is invalid: must be a positive integer"),
    ("launcher.name=pbs", "launcher.name='pbs' is invalid: valid: none, local, slurm"),
    ("mode=best", "launcher=local starts sweep workers, not mode=best"),
])
def test_bad_launcher_settings_fail_before_anything_is_submitted(workdir, override, message):
    cwd, common = workdir
    overrides = ["+sweep=lr_warmup", "launcher=local", override, *TINY, f"study.storage={sqlite_url(cwd)}", *common]
    with pytest.raises(StudyError, match=message):
        run(compose_study_config(overrides), overrides)
    assert not (cwd / "outputs").exists()


@pytest.mark.slow
def test_local_job_array_workers_share_one_study(workdir):
    cwd, common = workdir
    url = sqlite_url(cwd)
    overrides = ["+sweep=lr_warmup", "launcher=local", "launcher.array_size=2", *TINY, f"study.storage={url}",
                 "study.n_trials=4", *common]
    jobs = run(compose_study_config(overrides), overrides)
    assert len(jobs) == 2 and all(job.state in ("DONE", "COMPLETED", "FINISHED") for job in jobs), \
        [(job.state, job.stderr()) for job in jobs]
    trials = optuna.load_study(study_name="lr_warmup", storage=url).get_trials()
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 4 and len({t.number for t in trials}) == len(trials)
    assert sum(bool(t.user_attrs.get(BASELINE_ATTR)) for t in trials) == 1
    logs = [job.stdout() or "" for job in jobs]
    assert all("Trial" in log or "trial" in log for log in logs), logs  # each task ran trials
    assert {job.job_id for job in jobs} and (cwd / "outputs" / "studies" / "lr_warmup" / "launcher").is_dir()


def test_the_slurm_launcher_asks_for_what_its_settings_say():
    import submitit
    cfg = compose_study_config(["+sweep=lr_warmup", "launcher=slurm", "launcher.partition=gpu",
                                "launcher.max_parallel=2", "launcher.mem_gb=32",
                                "+launcher.slurm_additional.account=lab"])
    params = executor_parameters(cfg.launcher, "sweep-x")
    assert params == {"name": "sweep-x", "timeout_min": 240, "nodes": 1, "tasks_per_node": 1, "cpus_per_task": 8,
                      "gpus_per_node": 1, "mem_gb": 32, "slurm_partition": "gpu", "slurm_array_parallelism": 2,
                      "slurm_additional_parameters": {"account": "lab"}}
    # every name is one submitit's SLURM executor takes (generic ones through AutoExecutor)
    slurm = {k.removeprefix("slurm_") for k in params if k.startswith("slurm_")}
    assert slurm <= submitit.SlurmExecutor._valid_parameters()


def test_slurm_without_sbatch_is_one_error_before_anything_runs(workdir, monkeypatch):
    cwd, common = workdir
    monkeypatch.setenv("PATH", str(cwd))  # no sbatch here
    overrides = ["+sweep=lr_warmup", "launcher=slurm", *TINY, f"study.storage={sqlite_url(cwd)}", *common]
    with pytest.raises(StudyError, match="launcher=slurm submits with SLURM's sbatch, which is not on this"):
        run(compose_study_config(overrides), overrides)
    assert not (cwd / "outputs").exists()


def test_the_kubernetes_job_runs_a_valid_study_command(monkeypatch):
    [job] = yaml.safe_load_all((ROOT / "deploy" / "k8s" / "study-workers.yaml").read_text())
    assert (job["kind"], job["spec"]["completionMode"]) == ("Job", "Indexed")
    assert job["spec"]["completions"] >= job["spec"]["parallelism"] >= 1
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "study_runner.py"]
    [env] = container["env"]
    assert env["valueFrom"]["secretKeyRef"]["key"] == "url"
    monkeypatch.setenv(env["name"], "postgresql://u@db/optuna")
    cfg = compose_study_config(container["args"])  # every arg is a valid override of ours
    assert cfg.study.storage == "postgresql://u@db/optuna" and cfg.model.n_embd == 384
    assert cfg.study.n_trials == 30 and cfg.data.files == ["/data/fineweb/*.parquet"]
