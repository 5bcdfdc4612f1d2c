"""`python -m sweeps.diagnose PATH [options]`: why did this run's loss plateau?

PATH is a run dir of ours (metrics.jsonl and its config) or a nanoGPT console log; for a log,
nanoGPT's settings follow as train.py took them (`--batch_size=16 ...` and/or `--config FILE`)
and the unique training tokens as --train-tokens N, --train-bin train.bin or --data FILE.parquet.
Or a study: --storage URL --study NAME diagnoses its best trial and its baseline.
Bad input is one line saying what to pass, exit code 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import List, Optional

from sweeps.diagnosis import DiagnosisError, diagnose, diagnose_run_dir, diagnose_trial
from sweeps.diagnosis import curves, nanogpt


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, as every other bad input
        self.exit(2, f"error: {message} (python -m sweeps.diagnose --help lists the options)\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m sweeps.diagnose", allow_abbrev=False,
                                description=__doc__.split("\n\n")[0],
                                epilog="nanoGPT settings: any of its train.py keys as --key=value, e.g. "
                                       "--batch_size=16 --block_size=1024 --learning_rate=1e-3 --max_iters=20000")
    p.add_argument("path", nargs="?", type=Path, help="a run dir of ours or a nanoGPT console log")
    p.add_argument("--config", type=Path, help="the nanoGPT config file train.py was given (config/*.py)")
    tokens = p.add_mutually_exclusive_group()
    tokens.add_argument("--train-tokens", type=int, help="unique training tokens of a nanoGPT run")
    tokens.add_argument("--train-bin", type=Path, help="nanoGPT's train.bin (uint16 tokens), counted")
    tokens.add_argument("--data", nargs="+", default=[], metavar="PARQUET",
                        help="the parquet files the run trained on, tokenized and counted")
    p.add_argument("--storage", help="a study's storage URL (with --study)")
    p.add_argument("--study", help="a study's name: its best trial and its baseline are diagnosed")
    p.add_argument("--markdown", action="store_true", help="print markdown instead of text")
    return p


def _study(url: str, name: str) -> List[tuple]:
    import optuna
    from optuna.trial import TrialState

    from sweeps import trial_record
    from sweeps.storage import StorageError, open_storage, redact_url

    try:
        storage = open_storage(url, heartbeat_interval=None, grace_period=None, create=False)
        study = optuna.load_study(study_name=name, storage=storage)
    except StorageError as e:
        raise DiagnosisError(str(e)) from None
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
        raise DiagnosisError(f"no study {name!r} in {redact_url(url)}; its studies: {', '.join(names) or 'none'}") \
            from None
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]
    if not complete:
        raise DiagnosisError(f"study {name!r} has no finished trial yet; run it first (python study_runner.py ...)")
    best = min(complete, key=lambda t: t.value)
    out = [(f"best trial {best.number} (val loss {best.value:.4f})", diagnose_trial(best))]
    baseline = next((t for t in complete if trial_record.is_baseline(t)), None)
    if baseline is not None and baseline is not best:
        out.append((f"baseline trial {baseline.number} (val loss {baseline.value:.4f})", diagnose_trial(baseline)))
    elif baseline is None:
        out.append(("no finished baseline trial in the study", None))
    return out


def run(args: argparse.Namespace, rest: List[str]) -> List[tuple]:
    """The diagnoses the command line asks for, as (title, Diagnosis or None); `rest` holds the
    arguments argparse did not know: a nanoGPT log's --key=value settings."""
    if args.storage or args.study:
        if not (args.storage and args.study):
            raise DiagnosisError("a study needs both --storage URL and --study NAME")
        if args.path is not None or rest:
            raise DiagnosisError("give either PATH or --storage/--study, not both")
        return _study(args.storage, args.study)
    if args.path is None:
        raise DiagnosisError("pass PATH (a run dir of ours or a nanoGPT console log), or --storage URL --study NAME")
    path = args.path
    if not path.exists():
        raise DiagnosisError(f"{path}: no such file or folder; pass a run dir of ours or a nanoGPT console log")
    if path.is_dir():
        if rest or args.config or args.train_tokens or args.train_bin or args.data:
            extra = rest or ["--config/--train-tokens/--train-bin/--data"]
            raise DiagnosisError(f"{path} is a run dir of ours: it records its own settings and tokens; drop "
                                 f"{' '.join(extra)} (they are for a nanoGPT log)")
        return [(None, diagnose_run_dir(path))]
    log = nanogpt.read_log(path)
    settings = nanogpt.settings_of(log, args.config, rest)
    tokens = curves.count_train_tokens(args.train_tokens, args.train_bin, args.data)
    return [(None, diagnose(curves.read_nanogpt(path, settings, log, tokens, list(args.data))))]


def main(argv: Optional[List[str]] = None) -> int:
    args, rest = parser().parse_known_args(argv)
    try:
        results = run(args, rest)
    except DiagnosisError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    blocks = []
    for title, diagnosis in results:
        body = "" if diagnosis is None else (diagnosis.markdown() if args.markdown else diagnosis.text())
        blocks.append("\n".join(x for x in (f"== {title}" if title else None, body) if x))
    try:
        print("\n\n".join(blocks), flush=True)
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
