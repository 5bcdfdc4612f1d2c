import pytest

from trainer.config import ScheduleConfig
from trainer.schedule import get_lr, lr_sum


def cosine(**kw):
    return ScheduleConfig(**{"name": "cosine", "lr": 1e-3, "min_lr": 1e-4, "max_iters": 110,
                             "warmup_iters": 10, **kw})


def test_cosine_warmup_is_nanogpts():
    cfg = cosine()
    assert get_lr(0, cfg) == 1e-3 * 1 / 11
    assert get_lr(9, cfg) == 1e-3 * 10 / 11
    assert get_lr(10, cfg) == 1e-3  # warmup ends exactly at the peak


def test_cosine_decay_boundaries():
    cfg = cosine()
    assert get_lr(60, cfg) == pytest.approx(5.5e-4, rel=1e-12)  # halfway: the mean of lr and min_lr
    assert get_lr(110, cfg) == pytest.approx(1e-4, rel=1e-12)
    assert get_lr(111, cfg) == 1e-4
    assert get_lr(10_000, cfg) == 1e-4


def test_lr_decay_iters_follows_max_iters_unless_set():
    assert get_lr(110, cosine(max_iters=110)) == pytest.approx(1e-4)
    cfg = cosine(lr_decay_iters=60)
    assert get_lr(60, cfg) == pytest.approx(1e-4) and get_lr(100, cfg) == 1e-4


def test_schedule_is_python_floats():
    assert all(type(get_lr(it, cosine())) is float for it in (0, 10, 50, 200))


def test_min_lr_ratio_sets_min_lr_from_lr():
    cfg = cosine(min_lr=0.5, min_lr_ratio=0.1, lr=2e-3)
    assert get_lr(110, cfg) == pytest.approx(2e-4)


def test_constant_schedule_warms_up_then_holds():
    cfg = ScheduleConfig(name="constant", lr=1e-3, max_iters=100, warmup_iters=4)
    assert get_lr(0, cfg) == 1e-3 / 5
    assert [get_lr(it, cfg) for it in (4, 50, 99)] == [1e-3] * 3


def test_wsd_holds_then_decays_linearly_over_the_last_fraction():
    cfg = ScheduleConfig(name="wsd", lr=1e-3, min_lr=1e-4, max_iters=100, warmup_iters=10, decay_fraction=0.2)
    assert get_lr(10, cfg) == 1e-3 and get_lr(79, cfg) == 1e-3
    assert get_lr(80, cfg) == 1e-3  # decay starts here
    assert get_lr(90, cfg) == pytest.approx(5.5e-4)
    assert get_lr(100, cfg) == pytest.approx(1e-4)


def test_wsd_one_minus_sqrt_decay_falls_fast_then_slowly():
    cfg = ScheduleConfig(name="wsd", lr=1e-3, min_lr=1e-4, max_iters=100, warmup_iters=10, decay_fraction=0.2,
                         decay_shape="1-sqrt")
    assert get_lr(80, cfg) == 1e-3
    assert get_lr(85, cfg) == pytest.approx(1e-4 + 9e-4 * 0.5)  # a quarter of the way: sqrt(0.25) = 0.5 gone
    assert get_lr(100, cfg) == pytest.approx(1e-4)
    linear = ScheduleConfig(**{**cfg.__dict__, "decay_shape": "linear"})
    assert all(get_lr(it, cfg) < get_lr(it, linear) for it in range(81, 100))


def test_wsd_decay_inside_warmup_starts_from_the_lr_warmup_reached():
    # a cooldown branch of an early rung: warmup would end at 50, the decay starts at 20
    cfg = ScheduleConfig(name="wsd", lr=1e-3, min_lr=0.0, max_iters=25, warmup_iters=50, decay_fraction=0.2)
    reached = 1e-3 * 21 / 51
    assert get_lr(19, cfg) == pytest.approx(1e-3 * 20 / 51)
    assert get_lr(20, cfg) == pytest.approx(reached)
    assert get_lr(22, cfg) == pytest.approx(reached * 0.6)
    assert all(get_lr(it + 1, cfg) < get_lr(it, cfg) for it in range(20, 25))


def test_a_decay_shape_that_does_not_exist_names_the_valid_ones():
    from trainer.config import ConfigError, TrainConfig, check_config
    cfg = TrainConfig()
    cfg.schedule.decay_shape = "cosine"
    with pytest.raises(ConfigError, match="schedule.decay_shape='cosine'.*linear, 1-sqrt"):
        check_config(cfg)


def test_unknown_schedule_names_the_valid_ones():
    with pytest.raises(ValueError, match="cosine, constant, wsd"):
        get_lr(50, ScheduleConfig(name="linear"))


def test_fractions_follow_the_run_length():
    short = cosine(max_iters=100, warmup_iters=999, warmup_fraction=0.1, lr_decay_fraction=0.5)
    long = cosine(max_iters=1000, warmup_iters=999, warmup_fraction=0.1, lr_decay_fraction=0.5)
    assert get_lr(9, short) == pytest.approx(1e-3 * 10 / 11) and get_lr(10, short) == 1e-3
    assert get_lr(99, long) == pytest.approx(1e-3 * 100 / 101) and get_lr(100, long) == 1e-3
    assert get_lr(50, short) == pytest.approx(1e-4) and get_lr(500, long) == pytest.approx(1e-4)


def test_lr_sum_adds_the_schedule_over_a_span():
    cfg = cosine(max_iters=100, warmup_iters=10)
    assert lr_sum(cfg, 0, 0) == 0.0
    lr, min_lr = cfg.lr, cfg.min_lr
    # warmup: lr * (it + 1) / 11 for it < 10, which add up to lr * 55 / 11
    assert lr_sum(cfg, 0, 10) == pytest.approx(lr * 55 / 11)
    # the cosine over 90 iterations: its cos(pi k / 90) terms add up to 1, so min_lr * 90 + (lr - min_lr) * 91 / 2
    assert lr_sum(cfg, 10, 100) == pytest.approx(min_lr * 90 + (lr - min_lr) * 91 / 2)
    assert lr_sum(cfg, 0, 30) + lr_sum(cfg, 30, 100) == pytest.approx(lr_sum(cfg, 0, 100))
    constant = ScheduleConfig(name="constant", lr=2e-3, max_iters=50, warmup_iters=0)
    assert lr_sum(constant, 10, 20) == pytest.approx(10 * 2e-3)
