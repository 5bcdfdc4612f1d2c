"""`python -m sweeps.diagnose`: real runs of our trainer and real nanoGPT logs, each built to have one
cause, must be diagnosed with that cause first and its evidence numbers; bad input is one line, exit 2."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sweeps import diagnose as cli
from sweeps.diagnosis import DiagnosisError, diagnose_nanogpt_log, diagnose_run_dir, diagnose_trial
from sweeps.diagnosis.nanogpt import NANOGPT_DEFAULTS, read_config_file
from trainer import as_train_config, prepare_data, train
from trainer.data import sample_corpus_path

ROOT = Path(__file__).resolve().parents[1]
LOGS = ROOT / "tests" / "data" / "nanogpt_logs"
RUNS = json.loads((LOGS / "runs.json").read_text())
# a 1-layer, 32-wide GPT on CPU: a few hundred real iterations in well under a minute
TINY = {"model": {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32}, "batch_size": 4, "eval_iters": 4,
        "log_interval": 1, "device": "cpu", "dtype": "float32", "checkpoint": "best", "seed": 1337}
# the runs trained on UTF-8 bytes (a 320-wide head: steps 11x faster than on GPT-2's tokens). The
# others need GPT-2's: 3.4k tokens repeated 11 times, and train losses above the untrained model's
# after iteration 1, which a byte-level model at the same LR does not show
ON_BYTES = ("absurd_lr", "long_decay")
# name -> (the cause it is built to have, its own settings)
OUR_RUNS = {
    # ~3.4k training tokens seen 11 times: val turns up while train keeps falling
    "repetition": ("data_repetition", {"schedule": {"lr": 1e-2, "min_lr": 1e-3, "max_iters": 300, "warmup_iters": 15},
                                       "eval_interval": 15}),
    # a peak LR of 3: the loss jumps far above the untrained model's, and again long after warmup
    "absurd_lr": ("lr_too_high", {"schedule": {"lr": 3.0, "min_lr": 0.3, "max_iters": 150, "warmup_iters": 10},
                                  "eval_interval": 15}),
    # a high peak LR from iteration 0, decayed within 60 iterations: one early blow-up, then calm
    "no_warmup": ("warmup_too_short", {"schedule": {"lr": 0.3, "min_lr": 3e-3, "max_iters": 150, "warmup_iters": 0,
                                                    "lr_decay_iters": 60}, "eval_interval": 10, "eval_iters": 8}),
    # the motivating user's run in small: stopped on a plateau with the cosine decay barely begun
    "long_decay": ("lr_still_high", {"schedule": {"lr": 1e-2, "min_lr": 1e-3, "max_iters": 200, "warmup_iters": 10,
                                                  "lr_decay_iters": 4000}, "eval_interval": 10, "eval_iters": 8}),
}


def tiny_corpus(path: Path) -> Path:
    """20 documents of 600 characters from one play: ~3.4k training tokens, to repeat many times."""
    text = pq.read_table(sample_corpus_path()).column("text").to_pylist()[1][:12000]
    pq.write_table(pa.table({"text": [text[i:i + 600] for i in range(0, len(text), 600)]}), path)
    return path


@pytest.fixture(scope="module")
def our_runs(tmp_path_factory):
    """Each of OUR_RUNS trained once for the module: {name: (run dir, config)}; the sample corpus's
    tokens come from the session's shared cache."""
    base = tmp_path_factory.mktemp("diagnose_runs")
    cache = tmp_path_factory.getbasetemp() / "data_cache"
    corpus = tiny_corpus(base / "tiny.parquet")
    out = {}
    for name, (_, own) in OUR_RUNS.items():
        data = ({"name": "parquet", "files": [str(corpus)], "val_fraction": 0.1} if name == "repetition"
                else {"name": "sample"})
        model = TINY["model"]
        if name in ON_BYTES:
            data, model = {**data, "tokenizer": "bytes"}, {**model, "vocab_size": 320}
        cfg = as_train_config({**TINY, **own, "model": model, "data": {**data, "cache_dir": str(cache)},
                               "out_dir": str(base / name)})
        result = train(cfg)
        out[name] = (Path(cfg.out_dir), cfg, result)
    return out


def run_cli(*args, cwd=ROOT):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "sweeps.diagnose", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def main(capsys):
    """`python -m sweeps.diagnose ARGS` in this process: (exit code, stdout, stderr)."""
    def call(*args):
        try:
            code = cli.main([str(a) for a in args])
        except SystemExit as e:  # argparse's own refusals
            code = e.code
        out, err = capsys.readouterr()
        return code, out, err
    return call


# -- our runs -------------------------------------------------------------------------------------


def eval_rows(run_dir):
    """The evaluation records of a run's metrics.jsonl, read independently of the diagnosis."""
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [e for e in rows if e["type"] == "eval"]


def test_a_run_that_repeats_a_tiny_corpus_is_data_repetition_with_its_epochs(our_runs):
    run_dir, cfg, result = our_runs["repetition"]
    d = diagnose_run_dir(run_dir)
    lead = d.causes[0]
    assert lead.name == "data_repetition", d.text()
    unique = prepare_data(cfg.data, progress=False).train.num_tokens
    epochs = cfg.schedule.max_iters * cfg.batch_size * cfg.model.block_size / unique
    assert epochs > 8
    assert lead.evidence["epochs"] == pytest.approx(epochs, abs=0.01)
    assert lead.evidence["unique_train_tokens"] == unique
    evals = eval_rows(run_dir)
    best = min(evals, key=lambda e: e["val_loss"])
    assert lead.evidence["val_best"] == pytest.approx(best["val_loss"], abs=1e-4)
    assert lead.evidence["val_rise"] == pytest.approx(evals[-1]["val_loss"] - best["val_loss"], abs=1e-4)
    assert lead.evidence["gap_end"] == pytest.approx(evals[-1]["val_loss"] - evals[-1]["train_loss"], abs=1e-4)
    assert d.text().splitlines()[0].startswith("Data repetition")
    assert "More data" in d.next_step.text and "python -m trainer" in d.next_step.command


def test_a_run_at_an_absurd_lr_is_lr_too_high(our_runs):
    run_dir, cfg, result = our_runs["absurd_lr"]
    d = diagnose_run_dir(run_dir)
    lead = d.causes[0]
    assert lead.name == "lr_too_high", d.text()
    assert lead.evidence["peak_lr"] == cfg.schedule.lr
    evals = eval_rows(run_dir)
    assert lead.evidence["above_untrained"] == pytest.approx(
        max(e["train_loss"] for e in evals[1:]) - evals[0]["train_loss"], abs=1e-4)
    # whether the loss also rises or spikes after warmup at lr=3 is chaotic (the same code gave both
    # on this machine in different sessions): it is recorded; the diagnosis rests on the jump above
    assert lead.evidence["eval_rises_after_warmup"] >= 0 and lead.evidence["spikes_after_warmup"] >= 0
    assert lead.evidence["above_untrained"] > 0
    assert d.next_step.command.startswith("python study_runner.py +sweep=lr_warmup model.n_layer=1")
    assert "batch_size=4" in d.next_step.command and "data=sample" in d.next_step.command


def test_a_run_without_warmup_at_a_high_lr_is_warmup_too_short(our_runs):
    run_dir, cfg, result = our_runs["no_warmup"]
    d = diagnose_run_dir(run_dir)
    lead = d.causes[0]
    assert lead.name == "warmup_too_short", d.text()
    assert lead.evidence["warmup_iters"] == 0
    losses = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    untrained = losses[0]["train_loss"]  # the evaluation at iteration 0
    above = [r["iter"] for r in losses if r["type"] == "train" and r["iter"] > 1 and r["loss"] > untrained + 0.1]
    assert above and max(above) <= lead.evidence["window_end_iter"]
    assert lead.evidence["early_above_untrained"] == len(above) and lead.evidence["recovered"]
    assert "+sweep=lr_warmup" in d.next_step.command


def test_a_plateau_early_in_a_long_cosine_is_the_high_lr_part_of_the_schedule(our_runs):
    run_dir, cfg, result = our_runs["long_decay"]
    d = diagnose_run_dir(run_dir)
    lead = d.causes[0]
    assert lead.name == "lr_still_high", d.text()
    s = cfg.schedule  # nanoGPT's cosine at the last trained iteration, 199
    lr_end = s.min_lr + 0.5 * (1 + math.cos(math.pi * (199 - s.warmup_iters) / (s.lr_decay_iters - s.warmup_iters))) \
        * (s.lr - s.min_lr)
    assert lead.evidence["lr_end"] == pytest.approx(lr_end, rel=1e-4)
    assert lead.evidence["decay_share_left"] == pytest.approx((lr_end - s.min_lr) / (s.lr - s.min_lr), abs=1e-3)
    assert "3,800 iterations of decay ahead" in lead.sentence
    assert "schedule.lr_decay_iters=200" in d.next_step.command and "schedule.max_iters=200" in d.next_step.command


def test_the_cli_prints_the_verdict_first_and_the_markdown_has_the_table(our_runs, main):
    run_dir = our_runs["repetition"][0]
    code, out, err = run_cli(run_dir)
    assert code == 0, err
    assert out.splitlines()[0].startswith("Data repetition")
    code, out, err = main(run_dir, "--markdown")
    assert code == 0, err
    assert out.startswith("**Data repetition") and "| cause | confidence | evidence |" in out and "```bash" in out


# -- nanoGPT logs ---------------------------------------------------------------------------------

def log_epochs(name: str) -> float:
    """Epochs of a stored log computed from its own lines: the last iteration x tokens per iteration."""
    text = (LOGS / f"{name}.log").read_text()
    last = max(int(line.split()[1].rstrip(":")) for line in text.splitlines() if line.startswith(("iter ", "step ")))
    per_iter = int(next(line for line in text.splitlines() if line.startswith("tokens per iteration will be:"))
                   .split(":")[1].replace(",", ""))
    return last * per_iter / RUNS[name]["train_tokens"]


@pytest.mark.parametrize("name", sorted(RUNS))
def test_each_nanogpt_log_names_the_cause_it_was_built_for(name, main):
    run = RUNS[name]
    code, out, err = main(LOGS / f"{name}.log", *run["args"], "--train-tokens", run["train_tokens"])
    assert code == 0, err
    settings = dict(a[2:].split("=", 1) for a in run["args"])
    d = diagnose_nanogpt_log(LOGS / f"{name}.log", settings, run["train_tokens"])
    assert d.causes[0].name == run["cause"], d.text()
    assert out.splitlines()[0] == d.text().splitlines()[0]
    assert not d.assumed, d.assumed  # every setting the diagnosis reads was given


def test_the_nanogpt_repetition_log_says_epochs_and_the_gap_first():
    run = RUNS["repetition"]
    settings = dict(a[2:].split("=", 1) for a in run["args"])
    d = diagnose_nanogpt_log(LOGS / "repetition.log", settings, run["train_tokens"])
    lead = d.causes[0]
    assert lead.evidence["epochs"] == pytest.approx(log_epochs("repetition"), abs=0.01)
    assert lead.evidence["epochs"] > 16
    evals = [line for line in (LOGS / "repetition.log").read_text().splitlines() if line.startswith("step ")]
    train_end, val_end = (float(x) for x in (evals[-1].split("train loss ")[1].split(", val loss ")))
    assert lead.evidence["gap_end"] == pytest.approx(val_end - train_end, abs=1e-4)
    assert lead.evidence["val_rise"] > 0
    first = d.text().splitlines()[0]
    assert first.startswith("Data repetition") and f"{lead.evidence['epochs']:.1f} times" in first
    assert f"gap is {val_end - train_end:.3f}" in first
    assert d.next_step.command.startswith("python train.py") and "--max_iters=" in d.next_step.command


def test_the_train_bin_is_counted_as_uint16_tokens(tmp_path, main):
    run = RUNS["repetition"]
    np.zeros(run["train_tokens"], dtype=np.uint16).tofile(tmp_path / "train.bin")
    code, out, err = main(LOGS / "repetition.log", *run["args"], "--train-bin", tmp_path / "train.bin")
    assert code == 0, err
    assert f"of {run['train_tokens']:,}" in out


def test_parquet_data_is_tokenized_and_counted(workdir, main):
    cwd, _ = workdir  # the data cache goes to outputs/data_cache under the cwd
    run = RUNS["repetition"]
    corpus = tiny_corpus(cwd / "tiny.parquet")
    code, out, err = main(LOGS / "repetition.log", *run["args"], "--data", corpus)
    assert code == 0, err
    unique = prepare_data(as_train_config({"data": {"name": "parquet", "files": [str(corpus)]}}).data,
                          progress=False).train.num_tokens
    assert f"epochs of {unique:,})" in out


def test_settings_come_from_the_logs_start_and_missing_ones_lower_the_confidence(tmp_path):
    run = RUNS["absurd_lr"]
    given = diagnose_nanogpt_log(LOGS / "absurd_lr.log", dict(a[2:].split("=", 1) for a in run["args"]),
                                 run["train_tokens"])
    # only the log's step and iter lines, pasted without its start, and no arguments: defaults stand in
    bare = tmp_path / "bare.log"
    bare.write_text("\n".join(line for line in (LOGS / "absurd_lr.log").read_text().splitlines()
                              if line.startswith(("step ", "iter "))))
    from_log = diagnose_nanogpt_log(LOGS / "absurd_lr.log", {}, run["train_tokens"])
    assert from_log.causes[0].name == given.causes[0].name and not from_log.assumed
    guessed = diagnose_nanogpt_log(bare, {}, None)
    assert "learning_rate" in guessed.assumed["schedule"] and "batch_size" in guessed.assumed["tokens"]
    lead = {c.name: c for c in guessed.causes}[given.causes[0].name]
    assert lead.confidence < given.causes[0].confidence and "learning_rate" in lead.assumed
    text = guessed.text()
    assert "not given, nanoGPT's defaults assumed" in text and "learning_rate" in text


def test_a_nanogpt_config_file_is_read_as_train_py_reads_it(tmp_path):
    config = tmp_path / "train_mine.py"
    config.write_text("import time\nout_dir = 'out-mine'\nwandb_run_name = 'ft-' + str(time.time())\n"
                      "gradient_accumulation_steps = 5 * 8\nbatch_size = 16\nlearning_rate = 1e-3 # peak\n"
                      "max_iters = 20000\nlr_decay_iters = max_iters\nhelper = 3\n")
    assert read_config_file(config) == {"out_dir": "out-mine", "gradient_accumulation_steps": 40,
                                        "batch_size": 16, "learning_rate": 1e-3, "max_iters": 20000}
    config.write_text("learning_rate = 'fast'\n")
    with pytest.raises(DiagnosisError, match="learning_rate='fast' is a str; nanoGPT's learning_rate is a float"):
        read_config_file(config)
    assert NANOGPT_DEFAULTS["max_iters"] == 600000 and NANOGPT_DEFAULTS["warmup_iters"] == 2000


# -- errors ---------------------------------------------------------------------------------------

def _one_error_line(code, out, err, *needles):
    assert code == 2 and not out, out
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_bad_input_is_one_line_saying_what_to_pass(tmp_path, main):
    _one_error_line(*run_cli(tmp_path / "nope.log"), "no such file or folder", "nanoGPT console log")  # the real CLI
    _one_error_line(*main(tmp_path / "nope.log"), "no such file or folder", "nanoGPT console log")
    (tmp_path / "junk.log").write_bytes(b"\x00\xffnot a log\n")
    _one_error_line(*main(tmp_path / "junk.log"), "no nanoGPT lines", "console output")
    iters_only = tmp_path / "iters.log"
    iters_only.write_text("".join(f"iter {i}: loss 5.0, time 10.0ms, mfu 1.0%\n" for i in range(10)))
    _one_error_line(*main(iters_only), "no `step N: train loss X, val loss Y` line", "--eval_interval")
    two = tmp_path / "two.log"
    two.write_text("step 0: train loss 10.9, val loss 10.9\nstep 10: train loss 9.0, val loss 9.1\n")
    _one_error_line(*main(two), "2 evaluation(s)", "at least 3")
    log = LOGS / "repetition.log"
    _one_error_line(*main(log, "--learning_rate=fast"), "--learning_rate=fast", "is a float")
    _one_error_line(*main(log, "--lerning_rate=1e-3"), "'lerning_rate' is not a nanoGPT train.py setting")
    _one_error_line(*main(log, "batch_size=4"), "--key=value")
    (tmp_path / "odd.bin").write_bytes(b"abc")
    _one_error_line(*main(log, "--train-bin", tmp_path / "odd.bin"), "not a uint16 token file")
    _one_error_line(*main(log, "--train-tokens", "0"), "positive")
    _one_error_line(*main(log, "--train-tokens", "many"), "--train-tokens: invalid int value: 'many'", "--help")
    _one_error_line(*main(log, "--config", tmp_path / "missing.py"), "--config", "cannot read it")
    _one_error_line(*main(tmp_path), "no metrics.jsonl")
    _one_error_line(*main(), "pass PATH")
    _one_error_line(*main("--study", "x"), "both --storage URL and --study NAME")


def test_a_run_dir_without_a_config_says_where_one_would_be(tmp_path, main):
    (tmp_path / "metrics.jsonl").write_text('{"type": "eval", "iter": 0}\n')
    _one_error_line(*main(tmp_path), "no config beside metrics.jsonl", ".hydra/config.yaml")


def test_nanogpt_settings_given_for_a_run_dir_are_refused(tmp_path, main):
    _one_error_line(*main(tmp_path, "--batch_size=4"), "is a run dir of ours", "--batch_size=4")


# -- a study --------------------------------------------------------------------------------------

def test_a_study_diagnoses_its_best_trial_and_its_baseline(tiny_study, tmp_path, main, monkeypatch):
    cwd, url, name = tiny_study  # 4 trials of TINY (tests/test_study_runner.py): 20 iterations, none pruned yet
    monkeypatch.chdir(cwd)  # the trials' run dirs are relative to the study's folder
    study = optuna.load_study(study_name=name, storage=url)
    best = study.best_trial
    d = diagnose_trial(best)
    assert d.source.startswith(f"trial {best.number}")
    assert d.summary["iters"] == 20 and d.summary["tokens_seen"] == 20 * 4 * 32
    code, out, err = run_cli("--storage", url, "--study", name, cwd=cwd)  # the real CLI, from the study's folder
    assert code == 0, err
    assert f"== best trial {best.number} (val loss {best.value:.4f})" in out
    assert best.number == 0 or "== baseline trial 0" in out
    _one_error_line(*main("--storage", url, "--study", "nope"), "no study 'nope'", name)
    _one_error_line(*main("--storage", f"sqlite:///{tmp_path / 'missing.db'}", "--study", "x"), "missing.db")
    monkeypatch.chdir(ROOT)
    _one_error_line(*main("--storage", url, "--study", name), "is not there", "the folder the study ran in")
