"""bench/cooldown_replay.py on a hand-made record: compute shares, picks and regret are what the
rules give (the real pruners, no training)."""

from __future__ import annotations

import argparse
import json

import numpy as np

from bench.cooldown_replay import replay_main

PER_ITER = 512


def point(lr: float, final: float, rung_losses: list[float]) -> dict:
    steps = [i * 20 * PER_ITER for i in range(21)]
    values = list(np.linspace(10.5 + final / 100, final, 21))
    horizons = [5, 15, 44, 133, 400]
    return {
        "params": {"schedule.lr": lr, "schedule.warmup_fraction": 0.1},
        "cosine": {"steps": steps, "values": values, "se": [0.01] * 21, "lr_area": None, "lr_area_budget": None,
                   "batch_losses": None, "val_batches": None, "warmup_step": 4 * PER_ITER,
                   "budget_step": 400 * PER_ITER, "final": final, "tokens": 400 * PER_ITER, "status": "completed"},
        "cooldown": {"rungs": [{"horizon": h, "step": h * PER_ITER, "stable_tokens": (h - round(0.2 * h)) * PER_ITER,
                                "branch_tokens": round(0.2 * h) * PER_ITER, "val_loss": v, "se": 0.01}
                               for h, v in zip(horizons, rung_losses)]},
    }


def test_replay_scores_the_grid_and_asha_on_rungs_that_rank_like_the_truth(tmp_path, capsys):
    # decayed values follow a power law per point and rank the points as their cosine finals do
    points = [point(lr, final, [final + 4.0 * (400 / h) ** 0.5 / 20 ** 0.5 for h in (5, 15, 44, 133, 400)])
              for lr, final in [(1e-3, 6.2), (2e-3, 6.0), (4e-3, 5.8), (8e-3, 5.9), (1.6e-2, 6.4), (3.2e-2, 7.0)]]
    record = tmp_path / "grid.json"
    record.write_text(json.dumps({"meta": {"rungs": {"count": 5, "eta": 3}, "command": "test"},
                                  "points": points, "noise": [{"seed": 1, "final": 5.81}, {"seed": 2, "final": 5.79}]}))
    out = tmp_path / "scores.json"
    assert replay_main(argparse.Namespace(record=record, orders=20, seed=0, json=out)) == 0
    report = capsys.readouterr().out
    scores = {s["method"]: s for s in json.loads(out.read_text())["scores"]}
    grid = scores["no pruning (the grid)"]
    assert grid["compute"] == 1.0 and grid["mean_regret"] == 0.0 and grid["picks"] == {"lr=0.004, warmup_fraction=0.1": 20}
    asha = scores["cooldown + ASHA, 3 rungs (eta=3)"]
    assert asha["mean_regret"] == 0.0 and asha["compute"] < 1.0  # the decayed values rank the truth: the best survives
    assert asha["mean_wsd_regret"] == grid["mean_wsd_regret"] == 0.0  # its last rung is the best WSD run too
    full = scores["cooldown, no pruning (5 rungs)"]
    # every trial to its full length: its stable phase to 320, plus every branch (all after its 4-iteration warmup)
    assert full["compute"] == (320 + 1 + 3 + 9 + 27 + 80) / 400
    saved = json.loads(out.read_text())
    assert [r["decayed"] for r in saved["rank_correlations"]][-1] == 1.0
    assert len(saved["predictions"]) == 6 and all(abs(p["error"]) < 0.05 for p in saved["predictions"])
    assert "| cooldown + ASHA, 3 rungs (eta=3) |" in report and "one seed's noise" in report


def test_replay_skips_the_rungs_inside_a_points_warmup(tmp_path, capsys):
    points = [point(lr, final, [final + 4.0 * (400 / h) ** 0.5 / 20 ** 0.5 for h in (5, 15, 44, 133, 400)])
              for lr, final in [(1e-3, 6.2), (2e-3, 6.0), (4e-3, 5.8)]]
    for p in points:
        p["cosine"]["warmup_step"] = 40 * PER_ITER  # rungs 0-2 start their cooldown inside it
    record = tmp_path / "grid.json"
    record.write_text(json.dumps({"meta": {"rungs": {"count": 5, "eta": 3}}, "points": points, "noise": []}))
    out = tmp_path / "scores.json"
    replay_main(argparse.Namespace(record=record, orders=3, seed=0, json=out))
    scores = {s["method"]: s for s in json.loads(out.read_text())["scores"]}
    assert scores["cooldown, no pruning (5 rungs)"]["compute"] == (320 + 27 + 80) / 400
    assert json.loads(out.read_text())["predictions"] == []  # one rung after warmup fits no law


def test_a_live_study_is_scored_against_the_record_it_ran_the_points_of(tmp_path):
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    from bench.cooldown_replay import compare_live
    from sweeps import trial_record

    finals = [(1e-3, 6.2), (2e-3, 6.0), (4e-3, 5.8), (8e-3, 5.9)]
    points = [point(lr, final, [final + 4.0 * (400 / h) ** 0.5 / 20 ** 0.5 for h in (5, 15, 44, 133, 400)])
              for lr, final in finals]
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'live.db'}", study_name="live")
    lr = CategoricalDistribution([lr for lr, _ in finals])
    warmup = CategoricalDistribution([0.1])
    rungs = [r for r in points[0]["cooldown"]["rungs"]][2:]  # a 3-rung study: 44, 133, 400
    for idx, reached, state in [(1, 3, TrialState.COMPLETE), (0, 1, TrialState.PRUNED), (2, 3, TrialState.COMPLETE),
                                (3, 2, TrialState.PRUNED)]:
        values = {r["step"]: p["val_loss"] for r, p in zip(rungs, points[idx]["cooldown"]["rungs"][2:])}
        values = dict(list(values.items())[:reached])
        if idx == 3:  # one value off by 1e-3: the comparison says so
            first = min(values)
            values[first] += 1e-3
        tokens = rungs[reached - 1]["stable_tokens"] + sum(r["branch_tokens"] for r in rungs[:reached])
        study.add_trial(optuna.trial.create_trial(
            state=state, value=values[max(values)] if state == TrialState.COMPLETE else None,
            params={"schedule.lr": finals[idx][0], "schedule.warmup_fraction": 0.1},
            distributions={"schedule.lr": lr, "schedule.warmup_fraction": warmup},
            intermediate_values=values, user_attrs={trial_record.TOKENS_SEEN: tokens}))
    out = compare_live(points, study, eta=3, count=3)
    assert [t["point"] for t in out["trials"]] == [1, 0, 2, 3] and out["rung_values"] == 3 + 1 + 3 + 2
    assert abs(out["max_rung_difference"] - 1e-3) < 1e-9
    assert out["pick"] == points[2]["params"] and out["regret"] == 0.0
    full = 320 + 9 + 27 + 80  # a trial to the last rung: its stable phase and three branches
    assert out["compute"] == (full + (35 + 9) + full + (106 + 9 + 27)) / (4 * 400)
    # the one-worker replay of that order prunes by the same rule, from the record and from the
    # values the study measured
    assert out["replay_pick"] == points[2]["params"] and out["replay_regret"] == 0.0
    assert out["replay_of_live_values_pick"] == points[2]["params"] and not out["promotions"]
    assert (out["configs"], out["continuations"]) == (4, 0)

    # a config paused at its first rung and continued: one config, its tokens counted once, and
    # the replay is ASHA's with promotions
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'live.db'}", study_name="promoted")
    values = {r["step"]: p["val_loss"] for r, p in zip(rungs, points[2]["cooldown"]["rungs"][2:])}
    first = min(values)
    common = dict(params={"schedule.lr": finals[2][0], "schedule.warmup_fraction": 0.1},
                  distributions={"schedule.lr": lr, "schedule.warmup_fraction": warmup})
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.PRUNED, intermediate_values={first: values[first]}, **common,
        user_attrs={trial_record.TOKENS_SEEN: (35 + 9) * PER_ITER, trial_record.PAUSED_AT_RUNG: 0}))
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.COMPLETE, value=values[max(values)], intermediate_values=values, **common,
        # its stable phase to the end and the branches it trained itself (rung 0's was its paused trial's)
        user_attrs={trial_record.TOKENS_SEEN: (full - 9) * PER_ITER, **trial_record.continuation_attrs(0, 0),
                    trial_record.RESUMED_FROM: {"trial": 0, "step": 35 * PER_ITER}}))
    out = compare_live(points, study, eta=3, count=3)
    assert out["promotions"] and (out["configs"], out["continuations"]) == (1, 1)
    assert out["compute"] == full / (4 * 400)  # one run to the last rung, though in two trials
    assert out["replay_compute"] == out["compute"]


def test_with_runs_at_more_seeds_a_points_truth_is_its_mean_and_the_noise_the_spread_within_points(tmp_path, capsys):
    finals = [(1e-3, 6.2), (2e-3, 6.0), (4e-3, 5.8)]
    points = [point(lr, final, [final + 4.0 * (400 / h) ** 0.5 / 20 ** 0.5 for h in (5, 15, 44, 133, 400)])
              for lr, final in finals]
    record = tmp_path / "grid.json"
    record.write_text(json.dumps({"meta": {"rungs": {"count": 5, "eta": 3}}, "points": points, "noise": []}))
    # at two more seeds lr 2e-3 is the better config: its mean 5.9 against lr 4e-3's 6.0
    runs = [(2e-3, 1, 5.85), (2e-3, 2, 5.85), (4e-3, 1, 6.1), (4e-3, 2, 6.1), (1e-3, 1, 6.2), (1e-3, 2, 6.2),
            (1e-3, 3, 9.9), (4e-3, 4, 1.0)]  # seed 3: a diverged run; seed 4: one point only
    seeds = tmp_path / "seeds.json"
    seeds.write_text(json.dumps({"meta": {}, "runs": [
        {"params": {"schedule.lr": lr, "schedule.warmup_fraction": 0.1}, "seed": seed, "final": best, "best": best,
         "status": "diverged" if seed == 3 else "completed"} for lr, seed, best in runs]}))
    out = tmp_path / "scores.json"
    replay_main(argparse.Namespace(record=record, orders=3, seed=0, json=out, seeds=[seeds]))
    saved = json.loads(out.read_text())
    grid = {s["method"]: s for s in saved["scores"]}["no pruning (the grid)"]
    # the grid sees one seed, whose best is lr 4e-3: against the means, even it has a regret
    assert grid["picks"] == {"lr=0.004, warmup_fraction=0.1": 3} and abs(grid["mean_regret"] - 0.1) < 1e-12
    assert saved["grid_best"]["cosine_best"] == np.mean([6.0, 5.85, 5.85])
    assert saved["seeds_per_point"] == [3, 3, 3]  # neither the diverged run nor a seed some points lack
    spread = saved["seed_spread"]
    within = [np.var([6.2, 6.2, 6.2], ddof=1), np.var([6.0, 5.85, 5.85], ddof=1), np.var([5.8, 6.1, 6.1], ddof=1)]
    assert abs(spread["within_sd"] - np.sqrt(np.mean(within))) < 1e-12
    # seeds 1 and 2 shift the grid up by 1/60 against 1337's -1/30; the residuals, by hand, sum to
    # 0.07 over (3 - 1) x (3 - 1) degrees of freedom
    assert spread["seed_shifts"].keys() == {"1337", "1", "2"} and abs(spread["seed_shifts"]["1"] - 1 / 60) < 1e-9
    assert abs(spread["seed_shifts"]["1337"] + 1 / 30) < 1e-9
    assert abs(spread["paired_sd"] - np.sqrt(0.07 / 4)) < 1e-9 and saved["noise_sd"] == spread["paired_sd"]
    # one seed's runs (the record's) rank lr 4e-3 first; the means put it second
    assert saved["single_seed_correlation"] == 0.5
    assert "mean of 3-3 seeds" in capsys.readouterr().out


def test_records_at_other_seeds_make_both_truths_means_and_the_records_own_seed_is_refused(tmp_path, capsys):
    import pytest

    def wsd_rungs(last):  # a power law whose last rung (the full-length WSD run) is `last`
        return [last + 4.0 * (400 / h) ** 0.5 / 20 ** 0.5 - 4.0 / 20 ** 0.5 for h in (5, 15, 44, 133, 400)]

    def write(name, seed, finals):
        path = tmp_path / name
        path.write_text(json.dumps({"meta": {"rungs": {"count": 5, "eta": 3}, "seed": seed}, "noise": [],
                                    "points": [point(lr, c, wsd_rungs(w)) for lr, c, w in finals]}))
        return path

    # (lr, cosine final, WSD final): at seed 1337 lr 4e-3 is the best WSD run; at seeds 1 and 2 lr
    # 2e-3 is, by more, so its mean over seeds (5.75) beats lr 4e-3's (5.8)
    own = write("grid.json", 1337, [(1e-3, 6.2, 6.1), (2e-3, 6.0, 5.85), (4e-3, 5.8, 5.8)])
    others = [write(f"grid_seed{seed}.json", seed, [(1e-3, 6.2, 6.1), (2e-3, 6.0, 5.7), (4e-3, 5.8, 5.8)])
              for seed in (1, 2)]
    out = tmp_path / "scores.json"
    replay_main(argparse.Namespace(record=own, orders=3, seed=0, json=out, seeds=others))
    saved = json.loads(out.read_text())
    assert saved["seeds_per_point"] == [3, 3, 3] and saved["wsd_best"]["seeds_per_point"] == 3
    assert saved["wsd_best"]["params"]["schedule.lr"] == 2e-3 and abs(saved["wsd_best"]["wsd"] - 5.75) < 1e-12
    grid = {s["method"]: s for s in saved["scores"]}["no pruning (the grid)"]
    # the grid picks the best cosine run (lr 4e-3): 0.05 behind lr 2e-3's mean WSD run
    assert grid["mean_regret"] == 0.0 and abs(grid["mean_wsd_regret"] - 0.05) < 1e-12
    assert "Full-length WSD runs (each point's last rung, its mean over 3 seeds)" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="a record at seed 1337, the seed of the record replayed"):
        replay_main(argparse.Namespace(record=own, orders=3, seed=0, json=None, seeds=[own]))


def test_seeds_refuses_a_seed_list_or_an_lr_it_cannot_run_before_training(tmp_path):
    import pytest

    from bench.cooldown_fidelity import main

    record = tmp_path / "grid.json"
    record.write_text(json.dumps({"meta": {"rungs": {"count": 5, "eta": 3}, "grid_name": "share400"},
                                  "points": [point(1e-3, 6.2, [7.0] * 5)], "noise": []}))
    out = tmp_path / "seeds.json"
    for args, message in [(["--seeds", "1,x"], "--seeds '1,x': give comma-separated integers"),
                          (["--seeds", "1337"], "1337 is the seed the record's own runs"),
                          (["--lrs", "0.5"], "has points at lr 0.001 only")]:
        with pytest.raises(SystemExit, match=message.replace("(", r"\(")):
            main(["seeds", str(record), "--out", str(out), "--workdir", str(tmp_path / "w"), *args])
    assert not out.exists()


def test_the_contenders_noise_leaves_out_an_unstable_config_outside_the_best_third():
    from bench.cooldown_replay import seed_noise

    # nine points at three seeds: every seed shifts all alike, except lr 9e-3 (a diverging
    # config, far from the best three), which swings by 0.3
    finals = {lr: 5.0 + lr * 100 for lr in (1e-3, 2e-3, 3e-3, 4e-3, 5e-3, 6e-3, 7e-3, 8e-3, 9e-3)}
    points = [point(lr, f, [f] * 5) for lr, f in finals.items()]
    runs = [{"params": {"schedule.lr": lr, "schedule.warmup_fraction": 0.1}, "seed": seed, "status": "completed",
             "best": f + 0.05 * seed + (0.3 * (-1) ** seed if lr == 9e-3 else 0.0)}
            for lr, f in finals.items() for seed in (1, 2)]
    spread = seed_noise(points, runs)
    assert spread["contenders"] == 3 and spread["contender_sd"] < 1e-9 < spread["paired_sd"]


def test_predict_reads_a_long_runs_first_three_rungs_at_its_last_two_and_the_next_three_at_its_last(tmp_path, capsys):
    from bench.cooldown_fidelity import main

    law = lambda d: 1.5 + 40.0 * d ** -0.3  # noqa: E731  rungs on an exact power law with a floor
    steps = [222 * 512, 667 * 512, 2000 * 512, 8000 * 512, 20000 * 512]
    runs = {"runs": [{"params": {"schedule.lr": 4e-3, "schedule.warmup_iters": 30},
                      "rungs": [{"horizon": s // 512, "step": s, "val_loss": law(s), "se": 0.005} for s in steps]}]}
    path = tmp_path / "long.json"
    path.write_text(json.dumps(runs))
    assert main(["predict", str(path)]) == 0
    rows = [line.split(" | ") for line in capsys.readouterr().out.splitlines()[2:]]
    assert [(r[1], r[2]) for r in rows] == [("222, 667, 2000", "8,000"), ("222, 667, 2000", "20,000"),
                                            ("667, 2000, 8000", "20,000")]
    assert all(abs(float(r[5])) < 1e-3 for r in rows)  # the law recovered: predicted equals measured


def test_record_refuses_a_file_of_another_seed_before_training(tmp_path):
    import pytest

    from bench.cooldown_fidelity import main

    out = tmp_path / "grid.json"
    out.write_text(json.dumps({"meta": {"grid_name": "bytes2000", "seed": 1337}, "points": [], "noise": []}))
    with pytest.raises(SystemExit, match="holds seed 1337, not 1: one file per seed"):
        main(["record", "--grid", "bytes2000", "--seed", "1", "--out", str(out), "--workdir", str(tmp_path / "w")])
    assert not (tmp_path / "w").exists()


def test_merge_fills_a_larger_grid_with_a_smaller_ones_points_and_refuses_what_is_not_its_own():
    import pytest

    from bench.cooldown_fidelity import merge_records

    def part(grid_name, points, seed=1337):
        return {"meta": {"grid_name": grid_name, "seed": seed, "command": f"record --grid {grid_name}"},
                "points": [{"params": {"schedule.lr": lr, "schedule.warmup_iters": w}} for lr, w in points], "noise": []}

    merged = merge_records([part("bytes2000", [(1e-3, 10), (8e-3, 100)]), part("bytes2000fine", [(2.8e-3, 300)])],
                           "bytes2000fine")
    assert merged["meta"]["grid_name"] == "bytes2000fine" and merged["meta"]["seed"] == 1337
    assert [p["params"]["schedule.lr"] for p in merged["points"]] == [1e-3, 8e-3, 2.8e-3]
    assert len(merged["meta"]["grid"]["schedule.lr"]) == 8
    with pytest.raises(SystemExit, match=r"point lr=0.0028, warmup=300 is not in the grid 'bytes2000' "
                                         r"\(lrs 0.001, 0.002, 0.004, 0.008, 0.016; warmups 10, 30, 100\)"):
        merge_records([part("bytes2000fine", [(2.8e-3, 300)])], "bytes2000")
    with pytest.raises(SystemExit, match=r"seeds \[1337, 1\] \(in the order given\)"):
        merge_records([part("bytes2000", [(1e-3, 10)]), part("bytes2000", [(2e-3, 10)], seed=1)])
    with pytest.raises(SystemExit, match="is in two parts"):
        merge_records([part("bytes2000", [(1e-3, 10)]), part("bytes2000fine", [(1e-3, 10)])], "bytes2000fine")
    with pytest.raises(SystemExit, match="differs from 'bytes2000fine' in its model, max_iters"):
        merge_records([part("absolute1200", [(1e-3, 10)])], "bytes2000fine")


def test_the_live_bytes_sweep_trains_the_bytes2000fine_grids_points_as_record_does(tmp_path):
    from dataclasses import asdict

    from bench.cooldown_fidelity import GRIDS, point_config
    from sweeps.compose import CONF_DIR, compose_study_config
    from sweeps.search_space import parse_search_space
    from trainer import as_train_config

    grid = GRIDS["bytes2000fine"]
    cfg = compose_study_config(["+sweep=lr_warmup_iters_grid_bytes"])
    space = parse_search_space(cfg.sweep.params, cfg, CONF_DIR)
    assert sorted(space.distributions["schedule.lr"].choices) == sorted(grid.lrs)
    assert sorted(space.distributions["schedule.warmup_iters"].choices) == sorted(grid.warmups)
    assert cfg.study.n_trials == len(grid.points()) == 32

    def trained(train_cfg) -> dict:
        kept = asdict(train_cfg)
        for key in ("out_dir", "checkpoint"):
            kept.pop(key)
        kept["data"].pop("cache_dir")
        return kept

    for lr, warmup in [(2.8e-3, 300), (1.6e-2, 10)]:
        live = as_train_config(compose_study_config(["+sweep=lr_warmup_iters_grid_bytes", f"schedule.lr={lr}",
                                                     f"schedule.warmup_iters={warmup}"]))
        assert trained(live) == trained(point_config(lr, warmup, tmp_path, "p", grid=grid))


def test_asha_with_promotions_pauses_the_first_trials_where_stopping_asha_runs_them_to_the_end():
    from bench.cooldown_replay import asha_order, asha_promotion_order

    # worst first: stop-or-continue ASHA lets the first two go on (fewer than eta have reached a
    # rung), and the third goes on as the best; with promotions each pauses at 44 iterations and
    # only the best is resumed, to 133 and then (no other trial left) to the end
    points = [point(lr, final, [final + d for d in (3.0, 2.0, 1.0, 0.5, 0.0)])
              for lr, final in [(1e-3, 6.4), (2e-3, 6.2), (4e-3, 6.0)]]
    rungs = [2, 3, 4]  # 44, 133 and 400 iterations; stable phases of 35, 106 and 320
    assert asha_order(points, [0, 1, 2], rungs, 3) == (3 * (400 + 9 + 27) * PER_ITER, 2)
    assert asha_promotion_order(points, [0, 1, 2], rungs, 3) == ((3 * 44 + (106 - 35 + 27) + (320 - 106 + 80)) * PER_ITER, 2)


def test_a_replay_of_some_warmups_keeps_only_their_points_and_the_tokens_are_told_by_warmup():
    import pytest

    from bench.cooldown_replay import compute_by_warmup, only_warmups

    points = [point(lr, 6.0, [9.0, 8.0, 7.0, 6.5, 6.0]) for lr in (1e-3, 2e-3, 4e-3)]
    points[2] = {**points[2], "params": {"schedule.lr": 4e-3, "schedule.warmup_fraction": 0.3},
                 "cosine": {**points[2]["cosine"], "warmup_step": 120 * PER_ITER}}
    assert [p["params"]["schedule.lr"] for p in only_warmups(points, "0.1")] == [1e-3, 2e-3]
    assert only_warmups(points, None) == points
    with pytest.raises(SystemExit, match=r"--warmups 0.2: the grid's schedule.warmup_fraction values are 0.1, 0.3"):
        only_warmups(points, "0.2")
    # two orders: the warmup-0.1 points trained 40 and 400 iterations in all, the other 800
    spent = {0: 40 * PER_ITER, 1: 400 * PER_ITER, 2: 800 * PER_ITER}
    assert compute_by_warmup(points, spent, 2) == [
        {"warmup_iters": 4, "points": 2, "per_trial": pytest.approx((20 + 200) / 2 / 400), "of_grid": pytest.approx(220 / 1200)},
        {"warmup_iters": 120, "points": 1, "per_trial": pytest.approx(400 / 400), "of_grid": pytest.approx(400 / 1200)}]


def test_record_at_another_eta_refuses_a_cosine_source_or_a_file_it_cannot_extend_before_training(tmp_path):
    import pytest

    from bench.cooldown_fidelity import main, merge_records

    source = tmp_path / "grid.json"
    source.write_text(json.dumps({"meta": {"grid_name": "bytes2000", "seed": 1}, "points": [], "noise": []}))
    args = ["record", "--grid", "bytes2000", "--eta", "4", "--workdir", str(tmp_path / "w")]
    with pytest.raises(SystemExit, match=r"holds grid 'bytes2000' at seed 1, not 'bytes2000' at seed 1337"):
        main([*args, "--cosine-from", str(source), "--out", str(tmp_path / "eta4.json")])
    with pytest.raises(SystemExit, match=r"it lacks 15 of the grid's points \(lr=0.001, warmup=10;"):
        main([*args, "--seed", "1", "--cosine-from", str(source), "--out", str(tmp_path / "eta4.json")])
    eta3 = tmp_path / "eta3.json"
    eta3.write_text(json.dumps({"meta": {"grid_name": "bytes2000", "seed": 1337, "rungs": {"eta": 3}},
                                "points": [], "noise": []}))
    with pytest.raises(SystemExit, match="holds rungs at eta 3, not 4: one file per eta"):
        main([*args, "--out", str(eta3)])
    with pytest.raises(SystemExit, match=r"--eta 9: study.rungs: 5 rungs at eta=9 of max_iters=2000 give horizons"):
        main(["record", "--grid", "bytes2000", "--eta", "9", "--workdir", str(tmp_path / "w"), "--out", str(eta3)])
    assert not (tmp_path / "w").exists()
    parts = [{"meta": {"grid_name": "bytes2000", "seed": 1337, "rungs": {"eta": eta}, "command": ""}, "points": [],
              "noise": []} for eta in (3, 4)]
    with pytest.raises(SystemExit, match=r"eta \[3, 4\] \(in the order given\)"):
        merge_records(parts)


def test_asha_with_promotions_resumes_the_top_third_of_a_rung_and_the_higher_rung_first():
    from bench.cooldown_replay import asha_order, asha_promotion_order

    # nine points, point i worse than point i - 1 at every rung by 0.1 x i, played worst first, so
    # each new trial is the best so far. Rungs at 44 (35 stable + 9 cooling), 133 (106 + 27) and
    # 400 (320 + 80) iterations. With promotions, every trial trains 44; the third (point 6) tops
    # the three at 44 and is resumed to 133, as are points 5 and 4; point 4, the best of the three
    # at 133, goes to the end. From then on each new best (3, 2, 1, 0) is in the top floor(n/3) at
    # 44 and then at 133 (the higher rung first) and goes to the end: 7 resumptions to 133, 5 to 400.
    points = [point(1e-3 * (i + 1), 6.0 + 0.1 * i, [6.0 + d + 0.1 * i for d in (3.0, 2.0, 1.0, 0.5, 0.0)])
              for i in range(9)]
    rungs, order = [2, 3, 4], list(range(8, -1, -1))
    assert asha_promotion_order(points, order, rungs, 3) == ((9 * 44 + 7 * (106 - 35 + 27) + 5 * (320 - 106 + 80))
                                                              * PER_ITER, 0)
    # stop-or-continue ASHA trains every one of them to the end: each is the best at every rung
    spent = {}
    tokens, pick = asha_order(points, order, rungs, 3, spent=spent)
    assert (tokens, pick) == (9 * (400 + 9 + 27) * PER_ITER, 0) and sum(spent.values()) == tokens
