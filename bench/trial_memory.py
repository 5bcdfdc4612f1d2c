"""Memory across a sweep's trials: the process's RSS after each trial of one in-process study.

    python bench/trial_memory.py                       # 60 trials of the nano model, 20 iterations
    python bench/trial_memory.py --keep-freed-heap     # the same without returning the freed heap

Runs `sweeps.sweep.run_sweep` on `+sweep=lr_warmup` with short trials (a fresh SQLite study under
--workdir, its sampler and pruner as the sweep sets them) and reads VmRSS from
/proc/self/status after each trial. On CPU the trainer keeps freed heap mapped during a run (a
fresh mmap per step's logits costs a page-zeroing pass); the objective gives it back after each
trial. --keep-freed-heap skips that, to show what it prevents. Prints RSS after the first trial,
after the last, the largest step up between trials, and every value; --json OUT saves them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("TIKTOKEN_CACHE_DIR", str(REPO.parent / "shared" / "tiktoken_cache"))

import optuna  # noqa: E402

import sweeps.objective  # noqa: E402
from sweeps.compose import compose_study_config  # noqa: E402
from sweeps.sweep import run_sweep  # noqa: E402
from bench.provenance import provenance  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=60)
    ap.add_argument("--iters", type=int, default=20, help="training iterations per trial")
    ap.add_argument("--keep-freed-heap", action="store_true",
                    help="do not return the freed heap to the OS after each trial")
    ap.add_argument("--workdir", default="outputs/bench/trial_memory")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args(argv)

    made = provenance("bench/trial_memory.py", argv)
    work = Path(args.workdir)
    shutil.rmtree(work / "study", ignore_errors=True)
    if args.keep_freed_heap:
        sweeps.objective.release_freed_memory = lambda: None
    overrides = ["+sweep=lr_warmup", "model=nano", f"schedule.max_iters={args.iters}",
                 f"eval_interval={max(1, args.iters // 4)}", "eval_iters=4",
                 f"study.n_trials={args.trials}", f"study.storage=sqlite:///{(work / 'study' / 'optuna.db').resolve()}",
                 "study.name=memory"]
    cfg = compose_study_config(overrides)
    rss: list[float] = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    start = time.time()
    cwd = os.getcwd()
    os.makedirs(work / "study", exist_ok=True)
    os.chdir(work / "study")  # the trials' run dirs go under outputs/ there
    try:
        run_sweep(cfg, overrides, callbacks=[lambda study, trial: rss.append(rss_mb())])
    finally:
        os.chdir(cwd)
    steps = [b - a for a, b in zip(rss, rss[1:])]
    print(f"{len(rss)} trials of {args.iters} iterations in {time.time() - start:.0f} s"
          f"{' (freed heap kept)' if args.keep_freed_heap else ''}: RSS after the first {rss[0]:.0f} MB, "
          f"after the last {rss[-1]:.0f} MB ({rss[-1] - rss[0]:+.0f} MB), largest step up {max(steps, default=0):.0f} MB")
    print("RSS MB after each trial:", " ".join(f"{x:.0f}" for x in rss))
    if args.json:
        Path(args.json).write_text(json.dumps({**made, "keep_freed_heap": args.keep_freed_heap, "iters": args.iters,
                                               "rss_mb": rss}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
