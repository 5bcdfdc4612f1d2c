"""mode=plan: what a study costs, printed without training and without creating a study."""

import pytest

from sweeps.compose import compose_study_config
from sweeps.config import StudyError
from sweeps.plan import GIB
from sweeps.runner import run
from trainer import CUDA_RESERVED_BYTES, as_train_config, flops_per_token, largest_micro_batch, step_memory


def plan_of(overrides, capsys):
    cfg = compose_study_config(overrides)
    plan = run(cfg, overrides)
    return plan, capsys.readouterr().out


def test_plan_states_the_space_and_the_cost_and_creates_no_study(workdir, capsys):
    cwd, common = workdir
    plan, out = plan_of(["+sweep=lr_warmup", "mode=plan", *common], capsys)
    assert not (cwd / "outputs" / "optuna.db").exists() and not (cwd / "outputs" / "studies").exists()
    assert "schedule.lr               floats log scale, 0.0001 .. 0.01" in out
    assert "schedule.warmup_fraction  floats 0.0 .. 0.3" in out
    (size,) = plan.sizes  # the space changes no trial's size
    tokens = 400 * 8 * 64  # conf/budget/cpu_demo.yaml: max_iters x batch_size x the nano model's block
    assert size.tokens == tokens and size.iters == 400
    assert f"tokens       {tokens:,} = iterations x 512" in out
    assert f"epochs       {tokens / size.unique_tokens:.3g} of {size.unique_tokens:,} unique" in out
    assert size.train_flops == flops_per_token(as_train_config(compose_study_config(common)).model) * tokens
    assert f"tokens       {12 * tokens:,}" in out  # the study's 12 trials
    hours = 12 * (size.train_flops + size.eval_flops) / (0.3 * plan.target.peak_flops) / 3600
    assert f"hours        {hours:.3g} at 30% MFU" in out
    # 400 iterations against the default long run of 20,000: 1/50, under the 1/20 warned of
    assert "1/50 of the tokens of the long run (plan.long_run_iters=20,000" in out
    assert "WARNING: trials train on under 1/20 of the long run's tokens" in out

    _, out = plan_of(["+sweep=lr_warmup", "mode=plan", "plan.long_run_iters=4000", *common], capsys)
    assert "1/10 of the tokens" in out and "WARNING: trials train on under" not in out


def test_plan_flags_a_model_that_cannot_fit_in_12_gb(workdir, capsys):
    _, common = workdir
    overrides = ["+sweep=lr_warmup", "mode=plan", "model=gpt2_medium", "batch_size=16", "plan.gpu_mem_gb=12", *common]
    plan, out = plan_of(overrides, capsys)
    model = plan.sizes[0].cfg.model
    budget = 12 * GIB - CUDA_RESERVED_BYTES
    largest = largest_micro_batch(model, True, "cuda", budget)
    assert 1 <= largest < 16
    assert step_memory(model, largest, True, "cuda").peak <= budget < step_memory(model, 16, True, "cuda").peak
    assert (f"DOES NOT FIT: model=gpt2_medium at batch_size=16 (bf16/fp16) needs "
            f"{step_memory(model, 16, True, 'cuda').peak / GIB:.1f} GiB of 11.0 usable") in out
    assert f"the largest micro-batch that fits is {largest}" in out
    even = max(k for k in range(1, largest + 1) if 16 % k == 0)
    assert f"batch_size={even} gradient_accumulation_steps={16 // even} keeps the tokens per iteration" in out

    _, out = plan_of(["+sweep=lr_warmup", "mode=plan", "plan.gpu_mem_gb=12", *common], capsys)
    assert "DOES NOT FIT" not in out  # the nano model at the demo's batch


def test_plan_bounds_a_space_that_changes_the_model(workdir, capsys):
    _, common = workdir
    plan, out = plan_of(["+sweep=model_size", "mode=plan", *common], capsys)
    assert sorted(s.label for s in plan.sizes) == ["model=mini", "model=nano", "model=small"]
    params = sorted(s.params for s in plan.sizes)
    assert f"parameters   {params[0] / 1e6:.2f}M .. {params[-1] / 1e6:.2f}M" in out
    for label in ("model=nano", "model=mini", "model=small"):
        assert f"  {label} " in out  # a memory row each


def test_bad_plan_settings_fail_with_one_line(workdir, capsys):
    _, common = workdir
    with pytest.raises(StudyError, match=r"plan.mfu=0.0 is invalid: must be in \(0, 1\]"):
        plan_of(["+sweep=lr_warmup", "mode=plan", "plan.mfu=0", *common], capsys)
    with pytest.raises(StudyError, match="plan.long_run_iters=0 is invalid"):
        plan_of(["+sweep=lr_warmup", "mode=plan", "plan.long_run_iters=0", *common], capsys)


def test_plan_states_a_conditional_param_with_its_condition(workdir, capsys):
    _, common = workdir
    plan, out = plan_of(["+sweep=optimizer", "mode=plan", *common], capsys)
    assert plan.space.conditions == {"optim.muon_lr": ("optim", "muon")}
    assert "optim.muon_lr" in out and "only where optim=muon" in out
