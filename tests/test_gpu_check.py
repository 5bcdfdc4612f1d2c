"""bench/gpu_check.py --dry-run: every section of the GPU check runs on CPU at toy size, through the
code the GPU run takes, and writes its result file; sections past the deadline are recorded as
skipped. The nanoGPT section runs when NANOGPT_DIR names a checkout (as tests/test_nanogpt_compat.py)."""

import json
import math
import os
from pathlib import Path

import pytest
import torch

from bench.gpu_check import SECTIONS, SWEEP_TRIALS, main
from tests.test_estimate import TOLERANCE


def records_in(out: Path) -> dict:
    return {name: json.loads((out / f"{name}.json").read_text()) for name in SECTIONS}


@pytest.fixture
def one_thread(monkeypatch):
    """One torch thread here and in the subprocesses: toy models gain nothing from two, and on a
    machine shared with other jobs two threads wait on each other."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_the_dry_run_runs_every_section_and_records_sane_numbers(tmp_path, one_thread):
    nanogpt = Path(os.environ.get("NANOGPT_DIR") or tmp_path / "no_nanogpt")
    out = tmp_path / "out"
    assert main(["--dry-run", "--out", str(out), "--work-dir", str(tmp_path / "work"), "--nanogpt", str(nanogpt)]) == 0
    records = records_in(out)
    for name, record in records.items():
        assert record["status"] == "ok" or record["status"].startswith("skipped: "), \
            (name, record["status"], record["results"].get("traceback"))
        assert record["dry_run"] and record["environment"]["torch"] and record["environment"]["date_utc"]
    summary = (out / "summary.md").read_text()
    assert all(f"| {name} | {records[name]['status']} |" in summary for name in SECTIONS)

    runs = records["precision"]["results"]["runs"]
    assert sorted(runs) == ["bfloat16", "float32"]  # float32 stands in for float16 on CPU
    for run in runs.values():
        assert run["finite"] and run["val_loss_fell"] and run["last_loss"] < run["first_loss"]
        assert run["iters"] == 10 and run["tokens_per_s"] > 0

    rows = records["memory"]["results"]["rows"]
    assert [r["model"] for r in rows] == ["gpt_40m", "gpt2"]
    for r in rows:  # on CPU the estimate is the measured tensor peak within tests/test_estimate.py's tolerance
        assert r["measured_bytes"] > 0 and r["plan_peak_bytes"] > 0
        assert r["estimate_over_measured"] == pytest.approx(1, rel=TOLERANCE)

    compile_ = records["compile"]
    assert compile_["status"].startswith("skipped: dry run") and compile_["results"]["eager"]["tokens_per_s"] > 0

    trials = records["sweep"]["results"]["trials"]
    assert len(trials) == SWEEP_TRIALS and all(t["state"] in ("COMPLETE", "PRUNED") for t in trials)
    best = records["sweep"]["results"]["best"]
    assert math.isfinite(best["value"])
    assert best["value"] == min(t["value"] for t in trials if t["state"] == "COMPLETE")

    if (nanogpt / "train.py").is_file():
        results = records["nanogpt"]["results"]
        assert records["nanogpt"]["status"] == "ok" and results["ratio_ours_over_nanogpt"] > 0
        assert all(results["runs"][k]["tokens_per_s"] > 0 for k in ("ours", "nanogpt"))
    else:
        assert records["nanogpt"]["status"] == f"skipped: no nanoGPT checkout at {nanogpt}"


def test_sections_past_the_deadline_are_recorded_as_skipped(tmp_path):
    out = tmp_path / "out"
    assert main(["--dry-run", "--deadline", "0", "--out", str(out), "--work-dir", str(tmp_path / "work")]) == 0
    assert {name: r["status"] for name, r in records_in(out).items()} == {name: "skipped: deadline" for name in SECTIONS}
    assert "| sweep | skipped: deadline |" in (out / "summary.md").read_text()


def test_an_unknown_section_is_one_error_naming_the_valid_ones(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--dry-run", "--only", "precision,speed", "--out", str(tmp_path)])
    assert "unknown sections ['speed']; valid: precision, memory, compile, sweep, nanogpt" in capsys.readouterr().err
