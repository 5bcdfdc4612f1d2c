"""What a sweep prints: the study's progress bar and one line per trial on the console, each
trial's per-iteration log in its run dir's train.log (on the console too with verbose=true)."""

import re
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sweeps.console import trial_line
from sweeps.trial_record import record_outcome, set_fail_reason
from tests.test_study_runner import TINY, run_cli, sqlite_url, trials_of

TRIAL_LINE = re.compile(r"\btrial (\d+) \([^\n]*?\): [^\n]*?, (COMPLETE|PRUNED|FAIL): ")
ITER_LINE = re.compile(r"\biter \d+: loss [\d.]+, time [\d.]+ms")


def test_a_sweep_prints_progress_and_a_line_per_trial_and_logs_iterations_to_train_log(workdir):
    cwd, common = workdir
    url = sqlite_url(cwd)
    args = ["+sweep=lr_warmup", *TINY, "schedule.max_iters=10", f"study.storage={url}", *common]
    code, out = run_cli([*args, "study.n_trials=2"], cwd)
    assert code == 0, out
    assert [n for n, _ in TRIAL_LINE.findall(out)] == ["0", "1"], out
    assert "study lr_warmup |" in out and "2/2 finished" in out and "best " in out, out
    assert "plan: 2 trials of 10 iterations" in out  # the short plan, before the first trial
    assert not ITER_LINE.search(out) and "step 0: train loss" not in out, out
    for t in trials_of(url, "lr_warmup"):
        log = (Path(t.user_attrs["run_dir"]) / "train.log").read_text()
        assert len(ITER_LINE.findall(log)) == 2 and "step 10: train loss" in log  # log_interval=5
        assert "mfu" not in log  # a CPU run: MFU is a GPU's figure

    code, out = run_cli([*args, "study.n_trials=3", "verbose=true"], cwd)  # resumes: one more trial
    assert code == 0, out
    assert [n for n, _ in TRIAL_LINE.findall(out)] == ["2"] and "3/3 finished" in out, out
    assert len(ITER_LINE.findall(out)) == 2 and "step 10: train loss" in out and "mfu" not in out, out


def test_a_trial_line_names_the_trial_its_size_loss_state_and_why():
    study = optuna.create_study()
    outcome = dict(status="stopped", num_params=3_320_000, num_params_non_embedding=100_000, tokens_seen=200,
                   epochs=0.1, ms_per_iter=1.0, train_val_gap=0.1, best_iter=2, wall_time_s=1.0, checkpoint=None)

    pruned = study.ask()
    lr = pruned.suggest_float("schedule.lr", 1e-4, 1e-2, log=True)
    pruned.report(6.5, 100)
    pruned.report(6.2, 200)
    record_outcome(pruned, stop_reason="behind the finished trials beyond noise", **outcome)
    study.tell(pruned, state=TrialState.PRUNED)
    assert trial_line(study.trials[-1]) == (
        f"trial 0 (schedule.lr={lr:.4g}; 3.32M params): best val loss 6.2000 at 200 tokens, "
        f"PRUNED: behind the finished trials beyond noise")

    failed = study.ask()
    failed.suggest_float("schedule.lr", 1e-4, 1e-2, log=True)
    set_fail_reason(failed, "out of memory: CUDA out of memory")
    study.tell(failed, state=TrialState.FAIL)
    assert trial_line(study.trials[-1]).endswith("): no val loss, FAIL: out of memory: CUDA out of memory")

    from sweeps.trial_record import RungRecorder
    cooled = study.ask()
    rungs = RungRecorder(cooled)
    for step, value in ((640, 7.4), (1920, 7.1)):
        rungs.rung(step, value, cooldown_tokens=step // 5)
        cooled.report(value, step)
    study.tell(cooled, state=TrialState.PRUNED)
    assert trial_line(study.trials[-1]).endswith(
        "): decayed val loss 7.1000 at its last rung, 1,920 tokens, PRUNED: pruned")
