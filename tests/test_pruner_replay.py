"""The pruner replay engine (bench/pruner_replay.py), on its synthetic curves and a few orders."""

from __future__ import annotations

import json
import math

import optuna
import pytest

from bench.pruner_replay import (
    Curve,
    OraclePruner,
    default_pruners,
    fair_optuna_pruners,
    first_eval_after_warmup,
    main,
    parse_curves,
    replay_order,
    run_benchmark,
    synthetic_curves,
)
from sweeps.plateau_pruner import PlateauPruner

# Most curves here record no batch losses or LR sums: the pruner's fallbacks are meant.
pytestmark = pytest.mark.filterwarnings("ignore::sweeps.plateau_pruner.PlateauFallbackWarning")


@pytest.fixture(scope="module")
def data():
    return synthetic_curves(seed=0)


def test_synthetic_curves_have_the_recorded_shape(data):
    assert set(data) == {"meta", "trials"}
    curves = parse_curves(data)
    assert len(curves) == 24
    for c in curves:
        assert c.steps[0] == 0 and abs(c.values[0] - 10.83) < 0.05
        assert c.budget_step == data["meta"]["max_iters"] * data["meta"]["tokens_per_iter"]
        assert 0 < c.warmup_step < c.budget_step
    diverged = [c for c in curves if math.isnan(c.values[-1])]
    assert len(diverged) == 1 and diverged[0].steps[-1] < diverged[0].budget_step
    winner = min(curves, key=lambda c: c.best)
    # High LR with the longest warmup ends best ...
    assert winner.params == {"optim.lr": 4e-3, "schedule.warmup_iters": 1000}
    # ... after starting slow: it is behind most trials at its second evaluation.
    second = sorted(c.values[1] for c in curves)
    assert second.index(winner.values[1]) >= len(curves) // 2
    # Low LR improves steadily and never catches up.
    low = [c for c in curves if c.params["optim.lr"] == 6e-4]
    assert all(c.best > winner.best + 1.0 for c in low)
    assert synthetic_curves(seed=0) == data  # deterministic


def test_no_pruning_uses_every_step_and_keeps_the_winner(data):
    [score] = run_benchmark(data, n_orders=3, seed=1, pruners={"none": optuna.pruners.NopPruner})
    assert score.steps_used == pytest.approx(1.0)
    assert score.winner_kept == 1.0
    assert score.mean_regret == 0.0 and score.max_regret == 0.0
    assert score.mean_pruned == 0.0 and score.mean_stopped == 0.0


def test_plateau_replay_saves_steps_and_scores_are_in_range(data):
    scores = run_benchmark(
        data, n_orders=2, seed=0, pruners={"plateau": PlateauPruner}, keep_orders=True
    )
    [s] = scores
    assert 0.3 < s.steps_used < 1.0
    # on these curves the plateau pruner keeps the winner in both orders (bench/README: every order)
    assert s.winner_kept == 1.0 and s.mean_regret == 0.0 and s.max_regret == 0.0
    assert s.mean_pruned >= 1  # at least the diverging trial
    assert len(s.orders) == 2 and sorted(s.orders[0]["order"]) == list(range(24))


def test_replay_order_records_states_like_the_objective():
    flat = [10.8, 7.0, 6.0, 5.5, 5.2, 5.0, 5.0, 5.0, 5.0, 5.0]
    curves = [
        Curve({"i": i}, list(range(0, 1000, 100)), [v + 0.01 * i for v in flat], [0.02] * 10)
        for i in range(4)
    ]
    # A trial far behind that never improves: pruned once 3 peers are COMPLETE. (The others
    # differ by less than 2 SE, so none of them is a loser.)
    curves.append(Curve({"i": 4}, list(range(0, 1000, 100)), [10.8] + [9.0] * 9, [0.02] * 10))
    r = replay_order(curves, [0, 1, 2, 3, 4], PlateauPruner(z=2.0))
    assert r.n_pruned == 1 and r.regret == 0.0 and r.winner_kept
    full = sum(c.length for c in curves)
    assert r.steps_run < full


def test_replay_hands_the_pruner_each_evaluations_batch_losses():
    steps = list(range(0, 1000, 100))
    flat = [10.8, 7.0, 6.0, 5.5, 5.2, 5.0, 5.0, 5.0, 5.0, 5.0]
    hardness = [0.3, -0.3, 0.2, -0.2]  # the same for every model: SE 0.14 over these batches

    def curve(i, shift, batches):
        values = [v + shift for v in flat]
        per_eval = [[v + h + 0.001 * ((i + n) % 3) for n, h in enumerate(hardness)] for v in values]
        return Curve({"i": i}, steps, values, [0.14] * 10, batch_losses=per_eval,
                     val_batches=batches)

    # Trial 3 ends 0.1 behind the others: within one SE of one evaluation, but behind on
    # every batch. Only when its batch losses are paired with the peers' is it pruned.
    paired = [curve(i, 0.0, "b") for i in range(3)] + [curve(3, 0.1, "b")]
    r = replay_order(paired, [0, 1, 2, 3], PlateauPruner(n_startup_trials=3))
    assert r.n_pruned == 1 and r.winner_kept
    unpaired = paired[:3] + [curve(3, 0.1, "other batches")]
    assert replay_order(unpaired, [0, 1, 2, 3], PlateauPruner(n_startup_trials=3)).n_pruned == 0


def test_main_prints_a_table_and_saves_json(tmp_path, capsys):
    out = tmp_path / "scores.json"
    curves_out = tmp_path / "curves.json"
    rc = main(
        ["--synthetic", "--orders", "2", "--pruners", "none,plateau", "--json", str(out),
         "--dump-curves", str(curves_out)]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| pruner | steps used | winner kept |" in printed
    assert "| none | 100.0% | 100.0% | 0.0000 | 0.0000 |" in printed
    saved = json.loads(out.read_text())
    assert [s["pruner"] for s in saved["scores"]] == ["none", "plateau"]
    assert saved["n_trials"] == 24 and len(saved["scores"][0]["orders"]) == 2
    # The dumped curves replay the same from the file, all of them or the first few.
    rc = main([str(curves_out), "--orders", "2", "--pruners", "none"])
    assert rc == 0 and "| none | 100.0% |" in capsys.readouterr().out
    rc = main([str(curves_out), "--orders", "2", "--pruners", "none", "--trials", "5"])
    assert rc == 0 and capsys.readouterr().out.startswith("5 trials from")
    with pytest.raises(SystemExit):
        main([str(curves_out), "--trials", "25"])
    assert "--trials 25: the file holds 24 curves" in capsys.readouterr().err
    # Extra percentile rows; at the default median one repeats the plateau row exactly.
    rc = main([str(curves_out), "--orders", "2", "--pruners", "plateau", "--percentiles", "50,10"])
    rows = [line.split("|")[2:] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| plateau")]
    assert rc == 0 and len(rows) == 3 and rows[0] == rows[1]
    with pytest.raises(SystemExit):
        main([str(curves_out), "--percentiles", "25,101"])
    assert "--percentiles: '101' is not a number in [0, 100]" in capsys.readouterr().err


def test_default_pruners_are_fresh_each_time(data):
    factories = default_pruners(parse_curves(data))
    assert "plateau" in factories and "none" in factories
    assert any(name.startswith("median(n_warmup_steps=") for name in factories)
    for make in factories.values():
        assert make() is not make()


def test_malformed_curves_are_rejected():
    with pytest.raises(ValueError, match="trial 0"):
        parse_curves({"trials": [{"steps": [0, 1], "values": [1.0], "se": [0.0, 0.0]}]})
    with pytest.raises(ValueError, match="increasing"):
        parse_curves({"trials": [{"steps": [0, 0], "values": [1.0, 1.0], "se": [0.0, 0.0]}]})
    with pytest.raises(ValueError, match="no trials"):
        parse_curves({"trials": []})


def test_replay_tells_a_plateau_stop_complete_with_its_best():
    steps = list(range(0, 1000, 100))
    peers = [Curve({"i": i}, steps, [10.8, 7.0, 6.0, 5.5, 5.2] + [5.0] * 5, [0.0] * 10)
             for i in range(3)]
    values = [10.8, 6.0, 5.0, 4.8, 4.85, 4.9, 4.95, 4.9, 4.79, 4.78]
    leader = Curve({"i": 3}, steps, values, [0.0] * 10)
    r = replay_order(peers + [leader], [0, 1, 2, 3], PlateauPruner(n_startup_trials=3))
    # Stopped at step 600 (the last 3 evaluations all above its best, peers flat):
    # COMPLETE at 4.8, 0.02 short of the 4.78 it would have reached.
    assert r.n_stopped == 1 and r.n_pruned == 0
    assert not r.winner_kept and r.regret == pytest.approx(0.02)
    assert r.steps_run == 3 * 900 + 600


def test_oracle_prunes_every_loser_at_its_first_unprotected_evaluation():
    steps = list(range(0, 1000, 100))
    curves = [Curve({"i": i}, steps, [10.8, 7.0, 6.0, 5.5, 5.2] + [5.0 + 0.1 * i] * 5, [0.0] * 10,
                    warmup_step=200 if i == 3 else 0)
              for i in range(5)]
    r = replay_order(curves, [4, 3, 2, 0, 1], OraclePruner(curves, n_startup_trials=3))
    # three full curves first (n_startup_trials), the winner (0) runs to the end, the loser 1
    # stops at its 4th evaluation (min_evals 4, patience 3: k=4 > 3)
    assert r.winner_kept and r.n_pruned == 1
    assert r.steps_run == 3 * 900 + 900 + 300
    # With the plateau pruner's default (four finished trials), the winner is the fourth.
    r = replay_order(curves, [4, 3, 2, 0, 1], OraclePruner(curves))
    assert r.winner_kept and r.n_pruned == 1 and r.steps_run == 4 * 900 + 300


def test_oracle_of_the_plateau_rule_prunes_only_trials_ending_worse_than_the_peers_median():
    steps = list(range(0, 1000, 100))
    ends = [5.0, 5.1, 5.2, 5.15, 5.05]
    curves = [Curve({"i": i}, steps, [10.8, 7.0, 6.0, 5.5, 5.3] + [end] * 5, [0.0] * 10)
              for i, end in enumerate(ends)]
    # After 0, 1, 2 (median end 5.1): 3 ends at 5.15, worse, pruned at its 4th evaluation;
    # 4 ends at 5.05, better than the median of 0, 1, 2 (5.1): runs whole.
    oracle = OraclePruner(curves, end_percentile=50.0, n_startup_trials=3)
    r = replay_order(curves, [0, 1, 2, 3, 4], oracle)
    assert r.winner_kept and r.n_pruned == 1
    assert r.steps_run == 3 * 900 + 300 + 900


def test_oracle_of_the_plateau_rule_waits_until_the_trial_is_behind_at_the_same_step():
    steps = list(range(0, 1000, 100))
    peers = [Curve({"i": i}, steps, [10.8, 7.0, 6.0, 5.5, 5.3] + [end] * 5, [0.0] * 10)
             for i, end in enumerate([5.0, 5.1, 5.2])]
    # Ends at 5.15, worse than the peers' median end (5.1), but ahead of their median at steps
    # 300 (5.2 against 5.5) and 400 (5.15 against 5.3); behind from step 500 (against 5.1).
    early = Curve({"i": 3}, steps, [10.8, 6.5, 5.5, 5.2] + [5.15] * 6, [0.0] * 10)
    curves = peers + [early]
    oracle = OraclePruner(curves, end_percentile=50.0, n_startup_trials=3)
    by_end = replay_order(curves, [0, 1, 2, 3], oracle)
    assert by_end.n_pruned == 1 and by_end.steps_run == 3 * 900 + 300
    rule = OraclePruner(curves, now_percentile=50.0, end_percentile=50.0, n_startup_trials=3)
    r = replay_order(curves, [0, 1, 2, 3], rule)
    assert r.n_pruned == 1 and r.steps_run == 3 * 900 + 500


def test_fair_optuna_rows_start_their_rungs_at_the_first_evaluation_after_warmup():
    def curve(warmup):
        return Curve(params={}, steps=[0, 100, 200, 300, 400], values=[9, 8, 7, 6, 5], se=[0.1] * 5,
                     warmup_step=warmup, budget_step=400)

    curves = [curve(50), curve(200), curve(350)]
    assert first_eval_after_warmup(curves) == 300  # past the median warmup, 200
    rows = fair_optuna_pruners(curves)
    assert list(rows) == ["successive_halving", "successive_halving(min_resource=300; rf=3)",
                          "hyperband(min_resource=300; max_resource=400; rf=3)",
                          "median(n_startup_trials=4; n_warmup_steps=200)"]
    halving = rows["successive_halving(min_resource=300; rf=3)"]()
    assert halving._min_resource == 300 and halving._reduction_factor == 3


def test_fair_optuna_rows_replay_and_prune_less_early_than_their_defaults(data, capsys):
    curves = parse_curves(data)
    rows = fair_optuna_pruners(curves)
    fair, default = f"successive_halving(min_resource={first_eval_after_warmup(curves)}; rf=3)", "successive_halving"
    scores = {s.pruner: s for s in run_benchmark(data, 4, 0, {k: rows[k] for k in (default, fair)})}
    # Optuna's default min_resource ("auto") sits far below the first evaluation: it prunes at once
    assert scores[default].steps_used < scores[fair].steps_used <= 1.0
    assert main(["--synthetic", "--orders", "1", "--fair-optuna", "--pruners", fair]) == 0
    assert f"| {fair} |" in capsys.readouterr().out
