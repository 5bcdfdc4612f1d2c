"""What a user must never lose or leak: study names stay inside outputs/, the storage password stays
off disk, and SIGINT/SIGTERM stop the runner and the trainer cleanly with the shell's exit codes."""

import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeps.compose import compose_study_config
from sweeps.config import StudyError
from sweeps.runner import run
from tests.postgres import PG_URL, needs_postgres
from tests.test_storage import PASSWORD
from tests.test_study_runner import TINY, TINY_GPT2, run_cli, runner, sqlite_url, trials_of, wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["../../../escaped", "a/b", "with space", "a,b", "f(x)", ".hidden", "x" * 101])
def test_a_bad_study_name_fails_first_in_every_mode(workdir, name):
    cwd, common = workdir
    for mode in ("sweep", "best"):
        overrides = ["+sweep=lr_warmup", *TINY, f"study.storage={sqlite_url(cwd)}", f"mode={mode}", *common]
        cfg = compose_study_config(overrides)
        cfg.study.name = name  # as Hydra would pass it, whatever the shell quoting
        with pytest.raises(StudyError, match="study name .* is invalid: use 1-100 letters, digits"):
            run(cfg, overrides)
    assert not (cwd / "outputs").exists() and not (cwd.parent / "escaped").exists()  # nothing written


def test_names_with_dots_dashes_and_underscores_work_in_sweep_and_best(workdir):
    cwd, common = workdir
    base = ["+sweep=lr_warmup", *TINY, "study.n_trials=1", "study.name=lr-1e-3_v2.1", f"study.storage={sqlite_url(cwd)}",
            *common]
    code, out = run_cli(base, cwd)
    assert code == 0, out
    code, out = run_cli(base + ["mode=best", "schedule.max_iters=30"], cwd)
    assert code == 0, out
    best = cwd / "outputs" / "studies" / "lr-1e-3_v2.1"
    assert (best / "best_run" / "ckpt.pt").is_file() and (best / "best_config.yaml").is_file()


def saved_hydra_files(cwd: Path) -> list[Path]:
    return sorted((cwd / "outputs" / "study_runner").glob("*/.hydra/*.yaml"))


def test_a_rejected_run_leaves_no_password_in_what_hydra_saved(tmp_path):
    url = f"postgresql://someone:{PASSWORD}@127.0.0.1:1/db"
    code, out = run_cli(["+sweep=lr_warmup", f"study.storage={url}", "study.n_trials=0"], tmp_path)
    assert code == 1 and "study.n_trials=0 is invalid" in out
    files = saved_hydra_files(tmp_path)
    assert {f.name for f in files} == {"config.yaml", "hydra.yaml", "overrides.yaml"}
    for f in files:
        text = f.read_text()
        assert PASSWORD not in text and "someone:***@127.0.0.1:1/db" in text, f


@needs_postgres
def test_a_study_on_postgresql_with_a_password_keeps_it_off_disk(workdir):
    cwd, common = workdir
    from sqlalchemy.engine import make_url

    url = make_url(PG_URL).set(password=PASSWORD).render_as_string(hide_password=False)  # trust auth accepts it
    name = f"pw_{uuid.uuid4().hex[:8]}"
    try:
        code, out = run_cli(["+sweep=lr_warmup", *TINY, "study.n_trials=1", f"study.name={name}",
                             f"study.storage={url}", *common], cwd)
        assert code == 0, out
        assert PASSWORD not in out
        written = [p for p in cwd.rglob("*") if p.is_file() and p.suffix in (".yaml", ".json", ".jsonl", ".log")]
        assert len(saved_hydra_files(cwd)) == 3
        assert not [p for p in written if PASSWORD in p.read_text(errors="replace")]
    finally:
        optuna.delete_study(study_name=name, storage=PG_URL)


def test_sigterm_stops_a_study_with_143_and_queues_the_running_trial(workdir):
    cwd, common = workdir
    url = sqlite_url(cwd)
    proc = runner(["+sweep=lr_warmup", *TINY_GPT2, "schedule.max_iters=200", "eval_interval=10", f"study.storage={url}",
                   "study.n_trials=2", *common], cwd)

    def reporting():
        try:
            trials = trials_of(url, "lr_warmup")
        except KeyError:
            return False
        return bool(trials) and len(trials[0].intermediate_values) >= 2

    try:
        wait_for(reporting, timeout=300, what="trial 0 to report")
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 143, out
    assert "run the same command to resume" in out and "Traceback" not in out
    trials = trials_of(url, "lr_warmup")
    assert trials[0].state == TrialState.FAIL and "interrupted" in trials[0].user_attrs["fail_reason"]
    assert trials[1].state == TrialState.WAITING and trials[1].user_attrs["retry_of"] == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_trainer_cli_stops_cleanly_on_a_signal_and_resumes(tmp_path, sig):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "trainer", "model=nano", "schedule.max_iters=400", "eval_interval=10",
            "eval_iters=2", "batch_size=4", "checkpoint=last", f"out_dir={run_dir}",
            f"data.cache_dir={tmp_path.parent / 'data_cache'}"]
    proc = subprocess.Popen(args, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (run_dir / "ckpt.pt").is_file(), timeout=300, what="the first checkpoint")
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, out
    assert "Traceback" not in out
    assert f"{run_dir / 'ckpt.pt'} holds the last checkpoint written, intact" in out
    assert "init_from=resume" in out
    resumed = subprocess.run(args[:4] + ["schedule.max_iters=30", *args[5:], "init_from=resume"], cwd=ROOT,
                             text=True, capture_output=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming at iteration" in resumed.stdout


def test_sqlite_in_a_folder_that_does_not_exist_is_refused_not_created(tmp_path):
    missing = tmp_path / "no_such_dir" / "deeper"
    code, out = run_cli(["+sweep=lr_warmup", f"study.storage=sqlite:///{missing}/x.db"], tmp_path)
    assert code == 1 and f"the folder {missing} does not exist; create it first" in out
    assert not (tmp_path / "no_such_dir").exists()


def test_mode_best_on_a_missing_database_creates_nothing(tmp_path):
    db = tmp_path / "nothing_here.db"
    code, out = run_cli(["+sweep=lr_warmup", "mode=best", f"study.storage=sqlite:///{db}"], tmp_path)
    assert code == 1 and f"there is no database file {db}; run mode=sweep first" in out
    assert not db.exists()


def test_a_trial_that_crashes_is_recorded_and_the_study_keeps_its_baseline(workdir):
    """A full disk (here a file-size limit: every checkpoint write fails) crashes each trial: the
    trials are FAIL with the reason, the study stops after five in a row with that reason in one
    line, and once the disk has room the rerun still trains the baseline."""
    import resource

    cwd, common = workdir
    url = sqlite_url(cwd)
    args = ["+sweep=lr_warmup", *TINY_GPT2, f"study.storage={url}", "study.n_trials=2", *common]
    limit = 8 << 20  # above the data cache and the database, below a checkpoint (~19 MB)
    proc = runner(args, cwd, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 1, out
    assert "5 trials in a row failed (last: crashed: " in out and "Traceback" not in out
    trials = trials_of(url, "lr_warmup")
    assert [t.state for t in trials[:5]] == [TrialState.FAIL] * 5
    assert all(t.user_attrs["fail_reason"].startswith("crashed: ") for t in trials[:5])
    assert trials[1].user_attrs["retry_of"] == 0 and trials[0].user_attrs["baseline"]

    code, out = run_cli(args, cwd)
    assert code == 0, out
    assert "the baseline (trial 0) failed every time it ran; it is queued to run again" in out
    done = [t for t in trials_of(url, "lr_warmup") if t.state == TrialState.COMPLETE]
    baseline = [t for t in done if t.user_attrs.get("baseline")]
    assert len(baseline) == 1 and baseline[0].user_attrs["retry_of"] == 0
    assert "no completed baseline trial" not in out


@pytest.mark.parametrize("params,message", [
    ({"model.dropout": "interval(0.5, 1.5)"},
     "sweep param 'model.dropout': interval(0.5, 1.5) includes 1.5, but model.dropout=1.5 is invalid: must be in [0, 1)"),
    ({"schedule.warmup_fraction": "choice(0.1, 1.2)"},
     "includes 1.2, but schedule.warmup_fraction=1.2 is invalid: must be in [0, 1] or null"),
    ({"optim.weight_decay": "interval(-0.1, 0.1)"}, "includes -0.1, but optim.weight_decay=-0.1 is invalid"),
])
def test_a_searched_range_outside_its_fields_valid_values_fails_before_any_trial(workdir, params, message):
    from sweeps.search_space import SearchSpaceError

    cwd, common = workdir
    overrides = ["+sweep=lr_warmup", *TINY, f"study.storage={sqlite_url(cwd)}", *common]
    cfg = compose_study_config(overrides)
    cfg.sweep.params = params
    with pytest.raises(SearchSpaceError, match=re.escape(message)):
        run(cfg, overrides)
    assert not (cwd / "study.db").exists()  # nothing opened, nothing trained


@pytest.mark.parametrize("override,message", [
    ("schedule.lr=inf", "schedule.lr=inf is invalid: must be a finite number > 0"),
    ("schedule.lr=nan", "schedule.lr=nan is invalid: must be a finite number > 0"),
    ("optim.grad_clip=inf", "optim.grad_clip=inf is invalid: must be a finite number >= 0"),
])
def test_non_finite_settings_fail_before_training(tmp_path, override, message):
    code, out = run_cli(["+sweep=lr_warmup", override, f"study.storage={sqlite_url(tmp_path)}"], tmp_path)
    assert code == 1 and message in out and "Traceback" not in out


def test_a_schedule_that_never_reaches_its_peak_is_named_before_training():
    from trainer import schedule_warnings
    from trainer.config import ScheduleConfig

    [long_warmup] = schedule_warnings(ScheduleConfig(lr=1e-3, max_iters=20, warmup_iters=100))
    assert "warmup is 100 iterations but the run has max_iters=20, so the LR never reaches its peak" in long_warmup
    assert "(it ends at 0.000198)" in long_warmup  # 1e-3 * 20 / 101
    [early_decay] = schedule_warnings(ScheduleConfig(max_iters=400, warmup_iters=200, lr_decay_iters=100))
    assert "the cosine decay ends at lr_decay_iters=100, before warmup ends at iteration 200" in early_decay
    [short_run] = schedule_warnings(ScheduleConfig(lr=1e-3, min_lr=1e-4, max_iters=5000, warmup_iters=500,
                                                   lr_decay_iters=20000))  # experiment=seed_4070 budget=gpu
    assert "the cosine decay runs to lr_decay_iters=20000 but the run stops at max_iters=5000" in short_run
    assert schedule_warnings(ScheduleConfig(max_iters=400, warmup_iters=40)) == []
    assert schedule_warnings(ScheduleConfig(name="constant", max_iters=400, warmup_iters=200,
                                            lr_decay_iters=100)) == []


def test_the_runner_prints_the_baselines_schedule_warning(workdir):
    cwd, common = workdir
    code, out = run_cli(["+sweep=lr_warmup", *TINY, "study.n_trials=1", f"study.storage={sqlite_url(cwd)}", *common],
                        cwd)
    assert code == 0, out
    assert "WARNING: the baseline's schedule: warmup is 100 iterations but the run has max_iters=20" in out


def trainer_cli(tmp_path, *extra, **popen):
    args = [sys.executable, "-m", "trainer", "model=nano", "schedule.max_iters=20", "eval_interval=10",
            "eval_iters=2", "batch_size=4", "checkpoint=last", f"out_dir={tmp_path / 'run'}",
            f"data.cache_dir={tmp_path.parent / 'data_cache'}", *extra]
    proc = subprocess.run(args, cwd=ROOT, text=True, capture_output=True, timeout=300, **popen)
    return proc.returncode, proc.stdout + proc.stderr


def test_a_truncated_or_foreign_checkpoint_is_one_error_line_and_stays_as_it_was(tmp_path):
    import torch

    code, out = trainer_cli(tmp_path)
    assert code == 0, out
    ckpt = tmp_path / "run" / "ckpt.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    cut = ckpt.read_bytes()
    code, out = trainer_cli(tmp_path, "init_from=resume", "schedule.max_iters=30")
    assert code == 1 and "Traceback" not in out, out
    assert f"error: {ckpt} is not a readable checkpoint (" in out and "move it away" in out
    assert ckpt.read_bytes() == cut
    torch.save({"weights": torch.zeros(2)}, ckpt)
    code, out = trainer_cli(tmp_path, "init_from=resume", "schedule.max_iters=30")
    assert code == 1 and f"error: {ckpt} is not a GPT checkpoint: it lacks model, model_args" in out


def test_mode_best_with_a_truncated_long_run_checkpoint_says_so(workdir):
    cwd, common = workdir
    base = ["+sweep=lr_warmup", *TINY, "study.n_trials=1", f"study.storage={sqlite_url(cwd)}", *common]
    code, out = run_cli(base, cwd)
    assert code == 0, out
    ckpt = cwd / "outputs" / "studies" / "lr_warmup" / "best_run" / "ckpt.pt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"PK\x03\x04 cut short")
    code, out = run_cli(base + ["mode=best"], cwd)
    assert code == 1 and "Traceback" not in out, out
    assert "best_run/ckpt.pt is not a readable checkpoint" in out and ckpt.read_bytes() == b"PK\x03\x04 cut short"


def test_an_out_dir_that_cannot_be_made_fails_before_the_data(tmp_path):
    (tmp_path / "a_file").write_text("")
    code, out = trainer_cli(tmp_path, f"out_dir={tmp_path / 'a_file' / 'run'}")
    assert code == 1 and "Traceback" not in out, out
    assert f"error: out_dir='{tmp_path / 'a_file' / 'run'}' cannot be created (" in out
    assert "data:" not in out  # nothing tokenized or reused before the error


def test_a_full_disk_while_checkpointing_keeps_the_previous_checkpoint(tmp_path):
    import resource

    import torch

    code, out = trainer_cli(tmp_path)
    assert code == 0, out
    ckpt = tmp_path / "run" / "ckpt.pt"
    before = ckpt.read_bytes()
    limit = 8 << 20  # above metrics.jsonl, below a checkpoint of the nano model (~40 MB)
    code, out = trainer_cli(tmp_path, "init_from=resume", "schedule.max_iters=40",
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)))
    assert code == 1 and "Traceback" not in out, out
    assert f"error: cannot write checkpoint {ckpt} (" in out and "is the disk full?); the previous one is intact" in out
    assert ckpt.read_bytes() == before and torch.load(ckpt, weights_only=True)["iter_num"] == 20
    assert not list(ckpt.parent.glob(".ckpt.pt.*.tmp"))


def test_a_rerun_while_a_trial_is_still_marked_running_says_so(workdir):
    cwd, common = workdir
    url = sqlite_url(cwd)
    args = ["+sweep=lr_warmup", *TINY, f"study.storage={url}", "study.n_trials=1", *common]
    code, out = run_cli(args, cwd)
    assert code == 0, out
    running = optuna.load_study(study_name="lr_warmup", storage=url).ask()  # as a killed worker leaves it
    code, out = run_cli([a.replace("study.n_trials=1", "study.n_trials=2") for a in args], cwd)
    assert code == 0, out
    assert (f"holds 1 of study.n_trials=2 finished configs; trial(s) {running.number} still run elsewhere, or ran "
            f"in a worker that was killed") in out and "once its heartbeat is 30 s old" in out


def test_a_range_invalid_only_beside_another_setting_is_left_to_the_trials(workdir):
    """min_lr <= lr and n_embd % n_head are rules between two settings: with lr searched too, a
    min_lr range above the baseline's lr is fine, and the study opens."""
    from sweeps.search_space import check_values_allowed, parse_search_space
    from sweeps.compose import CONF_DIR

    cwd, common = workdir
    cfg = compose_study_config(["+sweep=lr_warmup", *TINY, *common])
    cfg.sweep.params = {"schedule.lr": "interval(1e-3, 1e-2)", "schedule.min_lr": "interval(1e-5, 1e-3)",
                        "model.n_head": "choice(2, 4)"}
    check_values_allowed(parse_search_space(cfg.sweep.params, cfg, CONF_DIR), cfg)  # no error


def test_sampled_values_the_data_rejects_fail_once_and_are_not_queued_again(workdir):
    cwd, common = workdir
    overrides = ["+sweep=lr_warmup", *TINY, f"study.storage={sqlite_url(cwd)}", "study.n_trials=2",
                 "study.baseline=false", *common]
    cfg = compose_study_config(overrides)
    cfg.sweep.params = {"model.vocab_size": "choice(200)"}  # below the bytes tokenizer's 257
    with pytest.raises(StudyError, match="5 trials in a row failed .*impossible config: model.vocab_size=200"):
        run(cfg, overrides)
    trials = trials_of(cfg.study.storage, "lr_warmup")
    assert [t.state for t in trials] == [TrialState.FAIL] * 5 and not any("retry_of" in t.user_attrs for t in trials)


def test_a_checkpoint_missing_what_a_resume_needs_is_named(tmp_path):
    import torch

    code, out = trainer_cli(tmp_path)
    assert code == 0, out
    ckpt = tmp_path / "run" / "ckpt.pt"
    saved = torch.load(ckpt, weights_only=True)
    torch.save({"model": saved["model"], "model_args": saved["model_args"]}, ckpt)  # weights only
    code, out = trainer_cli(tmp_path, "init_from=resume", "schedule.max_iters=30")
    assert code == 1 and "Traceback" not in out, out
    assert f"error: {ckpt} holds weights but not a run to resume (it lacks optimizer, iter_num, best_val_loss)" in out
    args = {k: v for k, v in saved["model_args"].items() if k != "bias"}  # nanoGPT before it stored bias
    torch.save({**saved, "model_args": args}, ckpt)
    code, out = trainer_cli(tmp_path, "init_from=resume", "schedule.max_iters=30")
    assert code == 1 and "its model_args lack bias" in out and "Traceback" not in out


def test_a_short_password_is_hidden_without_mangling_the_saved_config(tmp_path):
    code, out = run_cli(["+sweep=lr_warmup", "study.storage=postgresql://u:2@127.0.0.1:1/db", "study.n_trials=0"],
                        tmp_path)
    assert code == 1
    [config] = [f for f in saved_hydra_files(tmp_path) if f.name == "config.yaml"]
    text = config.read_text()
    assert "storage: postgresql://u:***@127.0.0.1:1/db" in text and "n_layer: 2" in text
