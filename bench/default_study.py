"""A whole study as a user runs it, timed: wall time, peak RSS, and what the study found.

    python bench/default_study.py --json bench/results/default_study.json            # +sweep=lr_warmup
    python bench/default_study.py --json OUT -- +sweep=lr_warmup_grid study.pruner.name=plateau

Runs `python study_runner.py ARGS` (default `+sweep=lr_warmup`) as a child in a fresh --workdir
(its own outputs/ and SQLite study, so nothing is resumed), with the data cache in
--cache-dir (tokenizing the sample is not what is timed: it is prepared first). Records the
child's wall time and peak RSS (RUSAGE_CHILDREN through a small launcher, as data_prep.py), and
from the study: the trials by state, the best and the baseline val loss, the gain, and the
training tokens used and saved by pruning (sweeps.report.compute_of), with the command and
machine. On a shared machine the wall time is an upper bound; the study's values do not depend
on the load (CPU training is deterministic).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(REPO.parent / "shared" / "tiktoken_cache"))

import optuna  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from bench.provenance import provenance  # noqa: E402
from sweeps import trial_record  # noqa: E402
from sweeps.report import compute_of  # noqa: E402

# A fresh launcher runs the study: on Linux a child's ru_maxrss starts from the high-water mark
# of the process that forked it, so it is forked from this small one, not from the caller.
LAUNCHER = """
import json, resource, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
print(json.dumps({"returncode": proc.returncode, "wall_s": time.perf_counter() - t0,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, "output": proc.stdout}))
"""


def study_summary(url: str, name: str) -> dict:
    """What the study found: trials by state, best and baseline, gain, compute used and saved."""
    study = optuna.load_study(study_name=name, storage=url)
    trials = study.get_trials(deepcopy=False)
    complete = sorted((t for t in trials if t.state == TrialState.COMPLETE), key=lambda t: t.value)
    baseline = next((t for t in trials if trial_record.is_baseline(t)), None)
    used, saved = compute_of(study)
    best = complete[0] if complete else None
    return {
        "study": name, "trials": len(trials),
        "states": {s.name: sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)},
        "best": None if best is None else {"number": best.number, "value": best.value, "params": best.params},
        "baseline": None if baseline is None or baseline.value is None else
        {"number": baseline.number, "value": baseline.value, "kind": trial_record.baseline(baseline)},
        "gain_over_baseline": None if best is None or baseline is None or baseline.value is None
        else baseline.value - best.value,
        "tokens_used": used, "tokens_saved": saved,
        "share_saved": saved / (used + saved) if used + saved else None,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", type=Path, default=Path("outputs/bench/default_study"),
                    help="the study runs here, emptied first (default %(default)s)")
    ap.add_argument("--cache-dir", type=Path, default=Path("outputs/data_cache"),
                    help="the tokenized data, prepared before the timed run (default %(default)s)")
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("study_args", nargs="*", default=["+sweep=lr_warmup"],
                    help="the study_runner.py arguments, after -- (default +sweep=lr_warmup)")
    args = ap.parse_args(argv)
    made = provenance("bench/default_study.py", argv)

    work, cache = args.workdir.resolve(), args.cache_dir.resolve()
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    url = f"sqlite:///{work / 'optuna.db'}"
    study_args = [*args.study_args, f"study.storage={url}", f"data.cache_dir={cache}"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}

    from sweeps.compose import compose_study_config, study_name_of
    from trainer import as_train_config, prepare_data

    cfg = compose_study_config(study_args)
    prepare_data(as_train_config(cfg).data)  # tokenizing once is not what is measured
    command = [sys.executable, str(REPO / "study_runner.py"), *study_args]
    print(f"running in {work}:\n  {' '.join(command)}", flush=True)
    res = subprocess.run([sys.executable, "-c", LAUNCHER, *command], cwd=work, env=env, check=True,
                         stdout=subprocess.PIPE, text=True)
    child = json.loads(res.stdout)
    if child["returncode"] != 0:
        print(child["output"][-3000:])
        raise SystemExit(f"the study exited with {child['returncode']}")
    summary = study_summary(url, study_name_of(cfg))
    result = {**made, "study_runner_args": args.study_args, "wall_s": child["wall_s"],
              "peak_rss_mb": child["maxrss_kb"] / 1024, **summary, "report": child["output"].splitlines()[-12:]}
    print("\n".join(result["report"]))
    print(f"wall {result['wall_s']:.0f} s, peak RSS {result['peak_rss_mb']:,.0f} MB")
    if args.json:  # a temp file renamed into place: an interrupted run leaves the old file whole
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(result, indent=1) + "\n")
        tmp.replace(args.json)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
