"""`launcher=slurm` (or `local`): a study's workers as a job array submitted through submitit.

The submitting process checks everything a sweep checks and creates the study and the data cache
(`sweeps.sweep.prepare_study`), so a bad setting fails at once, not in every task of the array.
Then it submits `launcher.array_size` tasks; each task is one worker that composes the same
command line (without the launcher) and runs `mode=sweep` on the shared study, as a worker started
by hand would: trial numbers come from the storage, `study.n_trials` is shared, a killed task's
trial is failed and queued again through the heartbeat, and SLURM's SIGTERM at the time limit
interrupts the running trial as Ctrl-C does. `local` runs the same tasks as processes on this
machine (submitit's LocalExecutor), which is how the tests drive this path.

The storage must be one every task reaches: PostgreSQL, or a SQLite or journal file on a file
system the nodes share (journal:/// for NFS).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from omegaconf import DictConfig

from sweeps.compose import compose_study_config, override_key, study_dir_of
from sweeps.config import LauncherConfig, StudyError
from sweeps.sweep import prepare_study


def worker_overrides(overrides: list[str]) -> list[str]:
    """The command line a task runs: the same, without the launcher (a task is a worker)."""
    return [o for o in overrides if override_key(o) != "launcher" and not override_key(o).startswith("launcher.")]


def run_worker(overrides: list[str], cwd: str) -> int:
    """One task of the array: a worker on the shared study; returns the trials the study holds."""
    from sweeps.runner import run  # here: the runner imports this module

    os.chdir(cwd)  # relative paths (the SQLite URL, outputs/) mean what they meant on submission
    study = run(compose_study_config(overrides), overrides)
    return len(study.get_trials(deepcopy=False))


def executor_parameters(launcher: LauncherConfig, job_name: str) -> dict:
    """submitit's AutoExecutor parameters for `launcher` (slurm_* ones reach SLURM only)."""
    params: dict = {"name": job_name, "timeout_min": launcher.timeout_min, "nodes": 1, "tasks_per_node": 1,
                    "cpus_per_task": launcher.cpus_per_task, "gpus_per_node": launcher.gpus_per_task}
    if launcher.mem_gb is not None:
        params["mem_gb"] = launcher.mem_gb
    if launcher.name == "slurm":
        params.update({k: v for k, v in {"slurm_partition": launcher.partition,
                                         "slurm_array_parallelism": launcher.max_parallel}.items() if v is not None})
        if launcher.slurm_additional:
            params["slurm_additional_parameters"] = dict(launcher.slurm_additional)
    return params


def _executor(launcher: LauncherConfig, folder: Path, job_name: str):
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster="local" if launcher.name == "local" else "slurm")
    executor.update_parameters(**executor_parameters(launcher, job_name))
    return executor


def launch_workers(cfg: DictConfig, overrides: list[str]) -> list:
    """Check and create the study here, then submit its workers as a job array; the jobs."""
    launcher = cfg.launcher
    if launcher.name == "slurm" and shutil.which("sbatch") is None:
        raise StudyError("launcher=slurm submits with SLURM's sbatch, which is not on this machine's PATH: "
                         "run the command on the cluster's login node (launcher=local runs the workers here)")
    prepared = prepare_study(cfg, overrides)
    study = prepared.study
    folder = study_dir_of(cfg) / "launcher"
    executor = _executor(launcher, folder, f"sweep-{study.study_name}")
    args = worker_overrides(overrides)
    jobs = executor.map_array(run_worker, [args] * launcher.array_size, [os.getcwd()] * launcher.array_size)
    print(f"submitted {len(jobs)} workers for study {study.study_name!r} ({launcher.name}): "
          f"job {jobs[0].job_id.split('_')[0]}; their logs: {folder}/")
    if launcher.wait or launcher.name == "local":
        try:
            for job in jobs:
                job.result()  # raises with the task's error
        except KeyboardInterrupt:
            for job in jobs:
                job.cancel(check=False)  # each worker records its trial interrupted, queued again
            raise
        print(f"all {len(jobs)} workers ended; study {study.study_name!r} holds "
              f"{len(study.get_trials(deepcopy=False))} trials")
    return jobs
