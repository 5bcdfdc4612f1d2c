"""PlateauPruner's rule on hand-made curves, through real in-memory Optuna studies.

Steps are 0, 100, 200, ... (stand-ins for tokens); every curve starts at the untrained loss.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import optuna
import pytest

from sweeps.plateau_pruner import PlateauDecision, PlateauFallbackWarning, PlateauPruner, StopsLeaders

optuna.logging.set_verbosity(optuna.logging.WARNING)
# Most hand-made curves record no batch losses or LR sums: the pruner's fallbacks (one
# evaluation's standard error, learning in steps) are what they test. The warning has its own
# tests below.
pytestmark = pytest.mark.filterwarnings("ignore::sweeps.plateau_pruner.PlateauFallbackWarning")

START = 10.8
DT = 100  # step interval between evaluations


def steps_for(values):
    return [i * DT for i in range(len(values))]


# How much harder than average each of 8 eval batches is: the same for every model, so the
# spread over batches (SE 0.11) is far larger than the noise in a batch-by-batch difference.
BATCH_HARDNESS = [0.5, -0.3, 0.2, -0.4, 0.1, 0.3, -0.2, -0.2]
BATCH_SE = float(np.std(BATCH_HARDNESS, ddof=1) / math.sqrt(len(BATCH_HARDNESS)))


def batch_losses(values, seed, batches="batches-a"):
    """User attrs recording `values` as the mean of 8 batch losses (hardness + jitter of 0.005)."""
    rng = np.random.default_rng(seed)
    per_step = {}
    for step, v in zip(steps_for(values), values):
        jitter = rng.normal(0.0, 0.005, len(BATCH_HARDNESS))
        per_step[str(step)] = list(v + np.array(BATCH_HARDNESS) + jitter - jitter.mean())
    return {"val_batch_losses": per_step, "val_batches": batches}


def three_peer_pruner(**kwargs):
    """A PlateauPruner that judges once three trials are finished, for the hand-made studies
    below that hold three peers; the default ``n_startup_trials`` (4) is tested on its own."""
    return PlateauPruner(**{"n_startup_trials": 3, **kwargs})


def make_study(pruner, peers, direction="minimize", learned=None, batches=False):
    """A study holding `peers` (lists of values) as COMPLETE trials; `learned(step)`, when given,
    is their LR summed up to a step (recorded as the objective does), budget step 1000;
    `batches`: each also records its batch losses (see `batch_losses`)."""
    study = optuna.create_study(direction=direction, pruner=pruner)
    for n, values in enumerate(peers):
        t = study.ask()
        if learned is not None:
            t.set_user_attr("lr_area", {str(st): learned(st) for st in steps_for(values)})
            t.set_user_attr("lr_area_budget", learned(1000))
        if batches:
            for key, value in batch_losses(values, seed=100 + n).items():
                t.set_user_attr(key, value)
        for step, v in zip(steps_for(values), values):
            t.report(v, step)
        study.tell(t, min(values))
    return study


def run_trial(study, values, *, warmup_step=None, budget_step=None, se=None, learned=None, tell=True,
              batches=None):
    """Report `values` one by one as the objective does; stop at the first verdict that isn't
    "continue"; `batches`: the name of the eval batches its batch losses are recorded on.
    Returns (actions after each report, the last decision)."""
    pruner = study.pruner
    trial = study.ask()
    if warmup_step is not None:
        trial.set_user_attr("warmup_step", warmup_step)
    if budget_step is not None:
        trial.set_user_attr("budget_step", budget_step)
    if learned is not None:
        trial.set_user_attr("lr_area_budget", learned(budget_step))
    se_map, learned_map = {}, {}
    actions, decision = [], None
    for step, v in zip(steps_for(values), values):
        if se is not None:
            se_map[str(step)] = se
            trial.set_user_attr("val_loss_se", dict(se_map))
        if learned is not None:
            learned_map[str(step)] = learned(step)
            trial.set_user_attr("lr_area", dict(learned_map))
        if batches is not None:
            recorded = batch_losses(values, seed=0, batches=batches)
            so_far = {st: x for st, x in recorded["val_batch_losses"].items() if int(st) <= step}
            trial.set_user_attr("val_batch_losses", so_far)
            trial.set_user_attr("val_batches", batches)
        trial.report(v, step)
        pruned = trial.should_prune()
        decision = pruner.last_decision(trial.number)
        assert pruned == (decision.action != "continue")
        actions.append(decision.action)
        if pruned:
            break
    if tell:
        if decision.action == "prune":
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
        else:
            finite = [v for v in values[: len(actions)] if math.isfinite(v)]
            study.tell(trial, min(finite))
    return actions, decision


# Peer curves (11 evaluations, steps 0..1000).
SMOOTH = [START, 7.5, 5.5, 4.5, 4.2, 4.1, 4.05, 4.0, 4.0, 4.0, 4.0]
# Plateau at 7.3 (the unigram level), then a sharp drop: the eventual winners look like this.
PLATEAU_DROP_A = [START, 7.4, 7.3, 7.3, 7.3, 7.3, 5.2, 4.4, 4.1, 4.0, 4.0]
PLATEAU_DROP_B = [START, 7.4, 7.3, 7.3, 7.3, 7.3, 7.3, 5.0, 4.5, 4.3, 4.2]
# Low LR: steady, never catches up.
STEADY_A = [START, 7.5, 7.0, 6.6, 6.3, 6.0, 5.7, 5.4, 5.2, 5.0, 4.8]
STEADY_B = [START, 7.6, 7.2, 6.8, 6.5, 6.2, 5.9, 5.6, 5.4, 5.2, 5.0]
# Flattened, then overfitting a little.
OVERFIT = [START, 6.0, 5.0, 4.6, 4.5, 4.5, 4.52, 4.55, 4.6, 4.62, 4.65]


def last_continue_then(actions, final):
    return all(a == "continue" for a in actions[:-1]) and actions[-1] == final


# --- the rule -------------------------------------------------------------------------------


def test_slow_starter_is_kept():
    study = make_study(three_peer_pruner(), [SMOOTH] * 3)
    # Far behind the peers at every step but falling fast; ends best.
    slow = [START, 10.0, 9.0, 7.8, 6.6, 5.4, 4.5, 4.0, 3.8, 3.7, 3.65]
    actions, _ = run_trial(study, slow, budget_step=1000)
    assert actions == ["continue"] * len(slow)


def test_stalled_loser_is_pruned():
    study = make_study(three_peer_pruner(), [SMOOTH] * 3)
    stalled = [START, 10.0, 9.0, 7.8, 7.8, 7.8, 7.8, 7.8, 7.8, 7.8, 7.8]
    actions, decision = run_trial(study, stalled, budget_step=1000)
    assert last_continue_then(actions, "prune")
    assert len(actions) < len(stalled)
    assert decision.reason.startswith("stalled loser")
    assert "projected" in decision.reason and "7.8000" in decision.reason


def test_slowing_learner_is_judged_by_its_gain_per_factor_of_training():
    study = make_study(three_peer_pruner(), [SMOOTH] * 3)
    # A power law towards 4.6 (6.31 at the end): far behind, still falling, ever more slowly.
    slowing = [START] + [4.6 + 5.4 / math.sqrt(i) for i in range(1, 11)]
    actions, decision = run_trial(study, slowing, budget_step=1000)
    # At step 400 its gain since step 100 (2.7) kept up per unit of steps would reach 1.9,
    # below the peers' end (4.0); kept up per factor of steps it reaches
    # 7.3 - 2.7 * ln(1000 / 400) / ln(400 / 100) = 5.515, above it: pruned at the first check.
    assert actions == ["continue"] * 4 + ["prune"]
    assert "own recent gain kept up: 5.515" in decision.reason
    assert study.trials[-1].state == optuna.trial.TrialState.PRUNED


def test_shared_plateau_is_kept_where_median_pruner_prunes():
    peers = [PLATEAU_DROP_A, PLATEAU_DROP_B, STEADY_A, STEADY_B]
    # On the plateau the eventual winners also sat on, behind the steady low-LR trials.
    on_plateau = [START, 7.45, 7.35, 7.35, 7.35, 7.35, 7.35, 5.1, 4.3, 3.95, 3.9]
    study = make_study(PlateauPruner(), peers)
    actions, _ = run_trial(study, on_plateau, budget_step=1000)
    assert actions == ["continue"] * len(on_plateau)

    median_study = make_study(optuna.pruners.MedianPruner(n_startup_trials=3), peers)
    t = median_study.ask()
    pruned_at = None
    for step, v in zip(steps_for(on_plateau), on_plateau):
        t.report(v, step)
        if t.should_prune():
            pruned_at = step
            break
    assert pruned_at is not None and pruned_at < 600  # before the drop


def test_stalled_behind_a_shared_plateau_is_pruned_once_the_peers_left_it():
    """The same plateau level, but long after every peer dropped off it: nothing can save it."""
    peers = [PLATEAU_DROP_A, PLATEAU_DROP_B, STEADY_A, STEADY_B]
    study = make_study(PlateauPruner(), peers)
    stuck = [START, 7.45] + [7.35] * 9
    actions, decision = run_trial(study, stuck, budget_step=1000)
    assert actions[-1] == "prune"
    # Not while a peer's later drop (>= 3.1) still covers the gap to where the peers end.
    assert len(actions) >= 8
    assert decision.reason.startswith("stalled loser")


def constant_lr(lr):
    return lambda step: lr * step


def test_low_lr_trial_on_the_shared_plateau_is_pruned_for_lack_of_learning_left():
    """The stuck curve above, at a tenth of the peers' LR: over the little learning it has
    left, the peers' own paths end far above where they ended. Pruned at the first check."""
    peers = [PLATEAU_DROP_A, PLATEAU_DROP_B, STEADY_A, STEADY_B]
    study = make_study(PlateauPruner(), peers, learned=constant_lr(1.0))
    stuck = [START, 7.45] + [7.35] * 9
    actions, decision = run_trial(study, stuck, budget_step=1000, learned=constant_lr(0.1))
    assert actions == ["continue"] * 4 + ["prune"]
    assert "at equal learning" in decision.reason
    # At the peers' LR it is the shared plateau until their drops are behind it (as above).
    study = make_study(PlateauPruner(), peers, learned=constant_lr(1.0))
    actions, _ = run_trial(study, stuck, budget_step=1000, learned=constant_lr(1.0))
    assert len(actions) >= 8 and actions[-1] == "prune"


# Peers at a constant LR that leave the plateau between steps 400 and 500.
ESCAPE_AT_450 = [START, 7.3, 7.3, 7.3, 7.3, 5.0, 4.2, 4.0, 4.0, 4.0, 4.0]


def long_warmup(step):
    """LR summed to `step` for LR 1 after a linear warmup over 600 steps (300 by step 600)."""
    return step * step / 1200 if step <= 600 else 300 + (step - 600)


def test_long_warmup_trial_on_the_plateau_is_compared_at_equal_learning():
    """At step 700 it still sits on the plateau every peer left at step 450, but it has done
    only 400 of learning: the peers were on the plateau then, and their next 300 took them to
    4.0, where they ended. Kept; compared at equal steps it would be pruned."""
    on_plateau = [START, 9.5, 8.5, 7.6, 7.35, 7.3, 7.3, 7.3, 5.0, 4.1, 3.95]
    study = make_study(three_peer_pruner(), [ESCAPE_AT_450] * 3, learned=constant_lr(1.0))
    actions, _ = run_trial(study, on_plateau, warmup_step=600, budget_step=1000, learned=long_warmup)
    assert actions == ["continue"] * len(on_plateau)
    study = make_study(three_peer_pruner(), [ESCAPE_AT_450] * 3)
    actions, decision = run_trial(study, on_plateau, warmup_step=600, budget_step=1000)
    assert actions == ["continue"] * 7 + ["prune"]
    assert "at equal training" in decision.reason


@pytest.mark.parametrize(
    "values",
    [
        [START, 7.0, 6.5, float("nan")],
        [START, 7.0, 6.5, float("inf")],
        [START, 7.0, 9.0, 11.2],  # above its starting level
    ],
)
def test_diverged_is_pruned_even_in_warmup(values):
    study = make_study(PlateauPruner(), [])
    actions, decision = run_trial(study, values, warmup_step=10_000)
    assert actions == ["continue"] * (len(values) - 1) + ["prune"]
    assert decision.reason.startswith("diverged")


def test_above_start_within_noise_is_not_divergence():
    # Early in a long warmup the loss has barely moved; an evaluation 0.03 above the start
    # with SE 0.02 (noise 0.04) is not divergence, 0.05 above is.
    study = make_study(PlateauPruner(z=2.0), [])
    actions, _ = run_trial(study, [START, START + 0.03, START - 0.2], se=0.02, warmup_step=500)
    assert actions == ["continue"] * 3
    actions, decision = run_trial(study, [START, START + 0.05], se=0.02, warmup_step=500)
    assert actions == ["continue", "prune"] and decision.reason.startswith("diverged")


def test_warmup_is_respected():
    study = make_study(three_peer_pruner(), [SMOOTH] * 3)
    bad = [START, 10.0] + [9.5] * 9
    actions, _ = run_trial(study, bad, warmup_step=500, budget_step=1000)
    # Steps 0..500 are in warmup; the first check past it (600) prunes.
    assert actions == ["continue"] * 6 + ["prune"]


def test_min_evals_is_respected():
    study = make_study(three_peer_pruner(min_evals=7, patience=2), [SMOOTH] * 3)
    bad = [START] + [9.5] * 10
    actions, _ = run_trial(study, bad, budget_step=1000)
    assert actions == ["continue"] * 6 + ["prune"]


def test_patience_also_protects_early_evaluations():
    study = make_study(three_peer_pruner(min_evals=1, patience=4), [SMOOTH] * 3)
    bad = [START] + [9.5] * 10
    actions, _ = run_trial(study, bad, budget_step=1000)
    assert actions == ["continue"] * 4 + ["prune"]  # k <= patience is protected


def test_too_few_peers_never_prunes_a_stall():
    stalled = [START, 9.0] + [8.5] * 9
    study = make_study(PlateauPruner(), [SMOOTH] * 3)  # the default waits for four
    actions, decision = run_trial(study, stalled, budget_step=1000)
    assert actions == ["continue"] * len(stalled)
    assert "3 finished peers at step 1000 < n_startup_trials 4" in decision.reason

    study = make_study(PlateauPruner(), [SMOOTH] * 4)
    actions, _ = run_trial(study, stalled, budget_step=1000)
    assert actions[-1] == "prune"

    study = make_study(PlateauPruner(n_startup_trials=2), [SMOOTH] * 2)
    actions, _ = run_trial(study, stalled, budget_step=1000)
    assert actions[-1] == "prune"


def test_peers_are_only_complete_trials():
    pruner = PlateauPruner(n_startup_trials=3)
    study = make_study(pruner, [SMOOTH] * 2)
    # A pruned trial and a running one are not peers.
    p = study.ask()
    for step, v in zip(steps_for(SMOOTH), SMOOTH):
        p.report(v, step)
    study.tell(p, state=optuna.trial.TrialState.PRUNED)
    running = study.ask()
    running.report(START, 0)
    running.report(4.0, 100)
    actions, _ = run_trial(study, [START, 9.0] + [8.5] * 9, budget_step=1000)
    assert actions == ["continue"] * 11


def test_short_peers_count_with_their_overall_best():
    # Peers stopped early (curves ending at step 500) still count, with their best value.
    short = SMOOTH[:6]
    study = make_study(three_peer_pruner(), [short] * 3)
    stalled = [START, 9.0] + [8.5] * 9
    actions, decision = run_trial(study, stalled)  # budget_step missing: largest peer step
    assert actions[-1] == "prune"
    assert "peers' final p50 4.1000" in decision.reason


def test_leader_is_stopped_when_peers_flattened_or_overfit():
    pruner = three_peer_pruner()
    study = make_study(pruner, [OVERFIT, OVERFIT, SMOOTH[:3] + [4.6] * 8])
    leader = [START, 6.0, 4.8, 4.4, 4.3, 4.3, 4.35, 4.4, 4.45, 4.5, 4.55]
    actions, decision = run_trial(study, leader, budget_step=1000)
    # Best at step 400; at 800 the last 3 evaluations all lie above it: the val loss turned up.
    assert actions == ["continue"] * 8 + ["stop"]
    assert decision == PlateauDecision("stop", decision.reason)
    assert decision.reason.startswith("plateaued leader")
    finished = study.trials[-1]
    assert finished.state == optuna.trial.TrialState.COMPLETE
    assert finished.value == 4.3


def test_flat_leader_is_not_stopped_until_its_val_loss_turns_up():
    # A flat leader may still drop when its LR anneals; only a turn upwards (overfitting) stops it.
    study = make_study(three_peer_pruner(), [OVERFIT, OVERFIT, SMOOTH[:3] + [4.6] * 8])
    flat = [START, 6.0, 4.8, 4.4, 4.3, 4.3, 4.3, 4.3, 4.3, 4.3, 4.3]
    actions, _ = run_trial(study, flat, budget_step=1000)
    assert "stop" not in actions


def test_leader_is_not_stopped_while_a_peer_dropped_later():
    study = make_study(three_peer_pruner(), [PLATEAU_DROP_A, PLATEAU_DROP_B, OVERFIT])
    flat_top = [START, 5.0, 4.6, 4.5, 4.5, 4.5, 4.5, 4.5, 4.5, 4.5, 4.5]
    actions, _ = run_trial(study, flat_top, budget_step=1000)
    # Until step 700 some peer still drops after the current step; then all peers are flat.
    assert actions[:7] == ["continue"] * 7
    assert "stop" not in actions


def test_noisy_top_trial_is_not_stopped_while_peers_gain_beyond_noise():
    study = make_study(three_peer_pruner(z=2.0), [PLATEAU_DROP_A, PLATEAU_DROP_B, STEADY_A])
    # Jitter within 2 x SE around the plateau, at the top of the peers.
    noisy = [START, 7.2, 7.25, 7.21, 7.22, 7.19, 7.23]
    actions, _ = run_trial(study, noisy, se=0.03, budget_step=1000)
    assert actions == ["continue"] * len(noisy)


def test_a_rise_within_noise_does_not_stop_a_leader():
    peers = [OVERFIT, OVERFIT, SMOOTH[:3] + [4.6] * 8]
    leader = [START, 6.0, 4.8, 4.4, 4.3, 4.29, 4.31, 4.32, 4.31]
    # With SE 0.02 (noise 0.04) the last three values lie within noise of the best (4.29): it goes on.
    actions, _ = run_trial(make_study(three_peer_pruner(z=2.0), peers), leader, se=0.02,
                           budget_step=1000)
    assert actions == ["continue"] * len(leader)
    # Without an SE they are a real rise: stopped once all three lie above the best.
    actions, _ = run_trial(make_study(three_peer_pruner(), peers), leader, budget_step=1000)
    assert actions == ["continue"] * 8 + ["stop"]


def test_small_gain_within_noise_is_treated_as_a_stall():
    flat_peers = [[START, 6.0, 5.0, 4.6, 4.5] + [4.5] * 6] * 3
    creeping = [START, 7.0, 5.3, 5.2, 5.1, 5.09, 5.06, 5.03, 5.0]
    # Without an SE, 0.09 over the last three evaluations (steps 500 to 800), kept up for every
    # further factor of steps up to a budget of 60000, projects 5.0 - 0.09 * ln(75) / ln(1.6)
    # = 4.17, below the peers' end (4.5): kept.
    actions, _ = run_trial(make_study(three_peer_pruner(z=2.0), flat_peers), creeping,
                           budget_step=60000)
    assert actions == ["continue"] * len(creeping)
    # With SE 0.05 (noise 0.1) the same 0.09 over 3 evaluations is no gain: pruned at once.
    actions, decision = run_trial(
        make_study(three_peer_pruner(z=2.0), flat_peers), creeping, se=0.05, budget_step=60000
    )
    assert actions == ["continue"] * 7 + ["prune"]
    assert decision.reason.startswith("stalled loser")


def test_the_drop_during_warmup_is_not_its_rate_after():
    study = make_study(three_peer_pruner(), [SMOOTH] * 3)
    # Falls 4.5 while its LR ramps up (to step 300), then crawls.
    late = [START, 10.5, 9.0, 6.0, 5.9, 5.85, 5.8, 5.78, 5.76, 5.75, 5.74]
    actions, decision = run_trial(study, late, warmup_step=300, budget_step=1000)
    # At step 400 only the gain since step 300 counts: 5.9 - 0.1 * ln(1000 / 400) / ln(400 / 300)
    # = 5.58, above the peers' end (4.0). (Counting the warmup's drop would project far below.)
    assert actions == ["continue"] * 4 + ["prune"]
    assert "own recent gain kept up: 5.5815" in decision.reason


def test_behind_on_every_batch_is_a_loser_though_within_the_spread_over_batches():
    flat_peers = [[START, 6.0, 5.0, 4.6, 4.5] + [4.5] * 6] * 3
    behind = [START, 6.0, 5.0, 4.7, 4.6] + [4.6] * 6  # 0.1 behind: within 1 SE (0.11) of them
    # Judged by the spread over batches, 0.1 is noise: kept.
    actions, _ = run_trial(make_study(three_peer_pruner(), flat_peers), behind, se=BATCH_SE)
    assert "prune" not in actions
    # Batch by batch it is 0.1 behind on every one (paired SE about 0.003): pruned once its
    # recent gain (4.7 at step 300 to 4.6), kept up per factor of steps, no longer reaches 4.5.
    study = make_study(three_peer_pruner(), flat_peers, batches=True)
    actions, decision = run_trial(study, behind, se=BATCH_SE, batches="batches-a")
    assert actions == ["continue"] * 6 + ["prune"]
    assert decision.reason.startswith("stalled loser")
    noise_now = float(decision.reason.split("+ noise ")[1].split(",")[0])
    assert 0 < noise_now < 0.01
    # Batch losses measured on other batches (e.g. another block_size) are not paired.
    study = make_study(three_peer_pruner(), flat_peers, batches=True)
    actions, _ = run_trial(study, behind, se=BATCH_SE, batches="batches-b")
    assert "prune" not in actions


def test_small_gain_on_every_batch_is_a_gain():
    flat_peers = [[START, 6.0, 5.0, 4.6, 4.5] + [4.5] * 6] * 3
    creeping = [START, 7.0, 5.3, 5.2, 5.1, 5.09, 5.06, 5.03, 5.0]
    # 0.09 over three evaluations is within 2 SE of the spread over batches: no gain, pruned.
    actions, _ = run_trial(make_study(three_peer_pruner(z=2.0), flat_peers), creeping, se=BATCH_SE,
                           budget_step=60000)
    assert actions[-1] == "prune"
    # Batch by batch it is a real gain; kept up to the long budget it reaches the peers: kept.
    actions, _ = run_trial(make_study(three_peer_pruner(z=2.0), flat_peers, batches=True), creeping,
                           se=BATCH_SE, budget_step=60000, batches="batches-a")
    assert actions == ["continue"] * len(creeping)


def test_within_noise_of_the_peers_is_not_a_loser():
    flat_peers = [[START, 6.0, 5.0, 4.6, 4.5] + [4.5] * 6] * 3
    close = [START, 6.0, 5.0, 4.6, 4.58] + [4.58] * 6
    actions, _ = run_trial(make_study(three_peer_pruner(z=2.0), flat_peers), close, se=0.05)
    assert "prune" not in actions
    actions, _ = run_trial(make_study(three_peer_pruner(z=2.0), flat_peers), close)
    assert actions[-1] == "prune"


def test_decide_does_not_record_and_last_decision_is_per_trial():
    pruner = PlateauPruner()
    study = make_study(pruner, [SMOOTH] * 3)
    assert pruner.last_decision(12345) is None
    t = study.ask()
    t.report(START, 0)
    frozen = study.get_trials(deepcopy=False)[-1]
    d = pruner.decide(study, frozen)
    assert d.action == "continue"
    assert pruner.last_decision(t.number) is None
    assert t.should_prune() is False
    assert pruner.last_decision(t.number) == d


def test_plateau_pruner_stops_leaders_and_says_which_verdict_stops():
    assert isinstance(PlateauPruner(), StopsLeaders)
    assert not isinstance(optuna.pruners.MedianPruner(), StopsLeaders)
    assert PlateauDecision("stop", "").stops
    assert not PlateauDecision("prune", "").stops and not PlateauDecision("continue", "").stops


# --- falling back when a trial records less -----------------------------------------------------

STALLED = [START, 10.0, 9.0, 7.8, 7.8, 7.8, 7.8, 7.8, 7.8, 7.8, 7.8]


def fallback_messages(record):
    return [str(w.message) for w in record if issubclass(w.category, PlateauFallbackWarning)]


def test_falling_back_warns_once_per_study():
    pruner = three_peer_pruner()
    for _ in range(2):  # the same pruner in a second study warns again
        study = make_study(pruner, [SMOOTH] * 3)
        with pytest.warns(PlateauFallbackWarning) as record:
            run_trial(study, STALLED, budget_step=1000)
            run_trial(study, SMOOTH, budget_step=1000)
        messages = fallback_messages(record)
        assert len(messages) == 2
        assert "no val batch losses" in messages[0] and "one evaluation's standard error" in messages[0]
        assert "no LR sums" in messages[1] and "counted in steps" in messages[1]
        assert all(f"study {study.study_name!r}" in m for m in messages)


def test_a_peer_without_lr_sums_warns_once():
    # The judged trial records everything; the peers, recorded by an older version, no LR sums.
    study = make_study(three_peer_pruner(), [SMOOTH] * 3, batches=True)
    with pytest.warns(PlateauFallbackWarning) as record:
        run_trial(study, STALLED, se=BATCH_SE, budget_step=1000, learned=constant_lr(1.0),
                  batches="batches-a")
        run_trial(study, STALLED, se=BATCH_SE, budget_step=1000, learned=constant_lr(1.0),
                  batches="batches-a")
    [message] = fallback_messages(record)
    assert message.startswith("PlateauPruner: trial 0 of study") and "no LR sums" in message


def test_no_warning_when_every_trial_records_batch_losses_and_lr_sums():
    study = make_study(three_peer_pruner(), [SMOOTH] * 3, learned=constant_lr(1.0), batches=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", PlateauFallbackWarning)
        actions, decision = run_trial(study, STALLED, se=BATCH_SE, budget_step=1000,
                                      learned=constant_lr(1.0), batches="batches-a")
    assert actions[-1] == "prune" and "at equal learning" in decision.reason  # judged in full


# --- arguments and direction ------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"percentile": -1.0}, "percentile"),
        ({"percentile": 100.5}, "percentile"),
        ({"percentile": "50"}, "percentile"),
        ({"patience": 0}, "patience"),
        ({"patience": 2.5}, "patience"),
        ({"min_evals": 0}, "min_evals"),
        ({"z": -0.1}, "z"),
        ({"z": float("nan")}, "z"),
        ({"n_startup_trials": 0}, "n_startup_trials"),
        ({"n_startup_trials": True}, "n_startup_trials"),
    ],
)
def test_bad_arguments_are_rejected(kwargs, name):
    with pytest.raises(ValueError) as err:
        PlateauPruner(**kwargs)
    message = str(err.value)
    assert message.startswith(name) and repr(next(iter(kwargs.values()))) in message


def test_edge_arguments_are_accepted():
    p = PlateauPruner(percentile=0, patience=1, min_evals=1, z=0, n_startup_trials=1)
    assert (p.percentile, p.patience, p.min_evals, p.z, p.n_startup_trials) == (0, 1, 1, 0, 1)


def test_maximize_study_is_an_error():
    study = optuna.create_study(direction="maximize", pruner=PlateauPruner())
    t = study.ask()
    t.report(0.5, 0)
    with pytest.raises(ValueError, match="minimize"):
        t.should_prune()


def test_decision_rejects_unknown_action():
    with pytest.raises(ValueError):
        PlateauDecision("halt", "")
