"""Export a study's val-loss curves in the format bench/pruner_replay.py replays.

    python study_runner.py +sweep=lr_warmup_grid            # a grid with no pruning
    python bench/record_curves.py --study lr_warmup_grid --out bench/results/curves.json
    python bench/pruner_replay.py bench/results/curves.json

Only trials that ran their whole budget count (COMPLETE, stop reason "completed its budget"):
the replay needs each trial's full curve.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sweeps.objective import (BUDGET_STEP, LR_AREA, LR_AREA_BUDGET, VAL_BATCH_LOSSES, VAL_BATCHES,
                              VAL_LOSS_SE, WARMUP_STEP)
from sweeps.storage import open_storage
from trainer.config import ScheduleConfig
from trainer.schedule import lr_sum


def lr_areas(t: optuna.trial.FrozenTrial, steps: list) -> tuple[list, float]:
    """The trial's LR sums at its steps and over its budget, as the objective records them;
    recomputed from its config for trials recorded before the objective did."""
    if LR_AREA in t.user_attrs:
        return [t.user_attrs[LR_AREA][str(s)] for s in steps], t.user_attrs[LR_AREA_BUDGET]
    schedule = ScheduleConfig(**json.loads(t.user_attrs["config"])["schedule"])
    per_iter = t.user_attrs[BUDGET_STEP] // schedule.max_iters
    return ([lr_sum(schedule, 0, s // per_iter) * per_iter for s in steps],
            lr_sum(schedule, 0, schedule.max_iters) * per_iter)


def curves_of(study: optuna.Study) -> dict:
    trials = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        steps = sorted(t.intermediate_values)
        if t.user_attrs.get("status") != "completed" or not steps or steps[-1] < t.user_attrs[BUDGET_STEP]:
            continue
        se = t.user_attrs.get(VAL_LOSS_SE, {})
        area, area_budget = lr_areas(t, steps)
        batches = {}
        if VAL_BATCHES in t.user_attrs:  # recorded since the objective pairs evaluations by batch
            per_step = t.user_attrs[VAL_BATCH_LOSSES]
            batches = {"batch_losses": [per_step[str(s)] for s in steps],
                       "val_batches": t.user_attrs[VAL_BATCHES]}
        trials.append({"number": t.number, "params": t.params, "steps": steps,
                       "values": [t.intermediate_values[s] for s in steps],
                       "se": [se.get(str(s), 0.0) for s in steps],
                       "warmup_step": t.user_attrs[WARMUP_STEP], "budget_step": t.user_attrs[BUDGET_STEP],
                       "lr_area": area, "lr_area_budget": area_budget, **batches})
    if not trials:
        raise SystemExit(f"study {study.study_name!r} has no trial that ran its whole budget")
    return {"meta": {"study": study.study_name, "trials": len(trials)}, "trials": trials}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--storage", default="sqlite:///outputs/optuna.db")
    ap.add_argument("--study", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    study = optuna.load_study(study_name=args.study, storage=open_storage(args.storage))
    data = curves_of(study)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(data, indent=1))
    print(f"{len(data['trials'])} curves -> {args.out}")


if __name__ == "__main__":
    main()
