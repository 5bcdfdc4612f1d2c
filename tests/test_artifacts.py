"""Trial artifacts: real training runs' files uploaded to a real file-system store and SQLite study."""

import json
import shutil

import matplotlib.image
import optuna
import pytest
import yaml
from optuna.artifacts import get_all_artifact_meta
from optuna.trial import TrialState

from sweeps.artifacts import (ARTIFACT_DIR, CONFIG_FILE, CURVE_FILE, METRICS_FILE, open_artifact_store,
                              plot_curve, read_metrics, upload, upload_trial_files)
from tests.test_study_runner import TINY, run_cli, sqlite_url, trials_of
from tests.test_train import tiny_config
from trainer import train

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real 20-iteration run of a tiny GPT: its run dir (metrics.jsonl, ckpt.pt)."""
    tmp = tmp_path_factory.mktemp("artifact_run")
    cfg = tiny_config(tmp, **{"schedule.max_iters": 20, "eval_interval": 5, "eval_iters": 2, "log_interval": 5})
    train(cfg)
    return tmp / "run"


def png_size(path):
    return matplotlib.image.imread(path).shape[:2]


def new_study(tmp_path):
    return optuna.create_study(storage=sqlite_url(tmp_path), study_name="arts")


def stored(store_dir, study, trial, filename):
    """The bytes the store holds for `trial`'s artifact `filename`."""
    frozen = study.get_trials(deepcopy=False)[trial.number]
    [meta] = [m for m in get_all_artifact_meta(frozen, storage=study._storage) if m.filename == filename]
    return (store_dir / meta.artifact_id).read_bytes(), meta.mimetype


@pytest.mark.parametrize("ending", ["complete", "pruned", "failed"])
def test_a_trial_uploads_its_config_metrics_and_curve_whatever_its_end(tmp_path, run_dir, ending):
    study, store_dir = new_study(tmp_path), tmp_path / "artifacts"
    store = open_artifact_store(store_dir)
    mine = tmp_path / "trial_0000"
    shutil.copytree(run_dir, mine)

    def objective(trial):
        ids = upload_trial_files(store, trial, mine, "schedule:\n  lr: 0.003\n", ending)
        assert len(ids) == 3
        if ending == "pruned":
            raise optuna.TrialPruned("stalled")
        if ending == "failed":
            raise RuntimeError("a bug")
        return 1.0

    study.optimize(objective, n_trials=1, catch=(RuntimeError,))
    [trial] = study.get_trials(deepcopy=False)
    assert trial.state == {"complete": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
                           "failed": TrialState.FAIL}[ending]
    config, mimetype = stored(store_dir, study, trial, CONFIG_FILE)
    assert yaml.safe_load(config) == {"schedule": {"lr": 0.003}} and mimetype == "application/yaml"
    assert config.decode().startswith("# trial 0 of study 'arts'")
    metrics, _ = stored(store_dir, study, trial, METRICS_FILE)
    assert metrics == (run_dir / METRICS_FILE).read_bytes()
    curve, mimetype = stored(store_dir, study, trial, CURVE_FILE)
    assert curve.startswith(b"\x89PNG") and mimetype == "image/png"
    assert not [p for p in store_dir.iterdir() if p.name.startswith(".")]  # no temp file left


def test_an_upload_that_fails_warns_in_one_line_and_the_trial_goes_on(tmp_path, run_dir, capsys):
    study = new_study(tmp_path)
    store = open_artifact_store(tmp_path / "artifacts")
    shutil.rmtree(tmp_path / "artifacts")
    (tmp_path / "artifacts").write_text("not a folder")  # every write into the store fails
    mine = tmp_path / "trial_0000"
    shutil.copytree(run_dir, mine)
    study.optimize(lambda t: len(upload_trial_files(store, t, mine, "a: 1\n", "complete")), n_trials=1)
    [trial] = study.get_trials(deepcopy=False)
    assert trial.state == TrialState.COMPLETE and trial.value == 0  # nothing uploaded, nothing failed
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 3, warnings  # one line a file
    assert all(line.startswith("WARNING: trial 0: artifact ") and "not uploaded: NotADirectoryError" in line
               for line in warnings)


def test_the_store_never_keeps_a_partial_artifact(tmp_path, run_dir):
    store = open_artifact_store(tmp_path / "artifacts")
    source = open(run_dir / METRICS_FILE, "rb")
    source.close()  # reading it fails, as a disk error mid-copy would
    with pytest.raises(ValueError):
        store.write("0f0e0d0c-0000-4000-8000-000000000000", source)
    assert list((tmp_path / "artifacts").iterdir()) == []


def test_a_study_artifact_of_a_missing_file_warns_naming_the_study(tmp_path, capsys):
    study = new_study(tmp_path)
    assert upload(open_artifact_store(tmp_path / "artifacts"), study, tmp_path / "report.md") is None
    assert capsys.readouterr().out.startswith("WARNING: study 'arts': artifact report.md not uploaded: FileNotFoundError")


def test_the_curve_draws_every_evaluation_and_skips_a_truncated_line(tmp_path, run_dir, capsys):
    text = (run_dir / METRICS_FILE).read_text()
    truncated = tmp_path / METRICS_FILE
    truncated.write_text(text + '{"type": "eval", "iter": 2')  # a run killed mid-line
    records = read_metrics(truncated)
    assert len(records) == len(text.splitlines())
    assert "1 unreadable line(s) left out" in capsys.readouterr().out
    assert [r["tokens"] for r in records if r["type"] == "eval"] == [0, 640, 1280, 1920, 2560]
    assert plot_curve(records, tmp_path / "curve.png", "study 'x', trial 0: complete") == tmp_path / "curve.png"
    assert png_size(tmp_path / "curve.png") == (500, 800)
    with_rungs = plot_curve(records, tmp_path / "rungs.png", "cooldown trial", decayed={800: 7.1, 2560: 6.2})
    assert with_rungs == tmp_path / "rungs.png" and (tmp_path / "rungs.png").read_bytes() != (tmp_path / "curve.png").read_bytes()
    no_evals = [r for r in records if r["type"] == "train"]
    assert plot_curve(no_evals, tmp_path / "none.png", "nothing") is None and not (tmp_path / "none.png").exists()


def test_the_runner_attaches_a_diverged_trials_files_and_prints_the_dashboard_command(workdir):
    cwd, common = workdir
    url = sqlite_url(cwd)
    code, out = run_cli(["+sweep=lr_warmup", *TINY, "schedule.lr=30", "schedule.warmup_iters=0",
                         "study.n_trials=1", f"study.storage={url}", *common], cwd)
    assert code == 0, out
    assert f"optuna-dashboard {url} --artifact-dir {ARTIFACT_DIR} --host 127.0.0.1" in out
    [trial] = trials_of(url, "lr_warmup")
    assert trial.state == TrialState.PRUNED  # diverged
    study = optuna.load_study(study_name="lr_warmup", storage=url)
    assert study.metric_names == ["val loss"]
    config, _ = stored(cwd / ARTIFACT_DIR, study, trial, CONFIG_FILE)
    assert yaml.safe_load(config)["schedule"]["lr"] == 30  # the config it trained, resolved
    metrics, _ = stored(cwd / ARTIFACT_DIR, study, trial, METRICS_FILE)
    assert any(json.loads(line).get("val_loss", 0) > 100 for line in metrics.decode().splitlines())
    curve, _ = stored(cwd / ARTIFACT_DIR, study, trial, CURVE_FILE)
    assert curve == (cwd / "outputs" / "studies" / "lr_warmup" / "trial_0000" / CURVE_FILE).read_bytes()
