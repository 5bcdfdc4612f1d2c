"""trainer.estimate against the real thing: parameter counts and FLOPs against the GPT, and the
peak memory estimate against the tensor memory real training steps allocate on CPU."""

import pytest
import torch

from bench.memory_estimate import peak_tensor_bytes
from trainer.config import ModelConfig, TrainConfig
from trainer.estimate import gpu_peak_flops, largest_micro_batch, num_params, step_memory
from trainer.model import GPT
from trainer.train import train
from tests.configs import with_overrides

# The estimate counts the tensors autograd keeps and the loss's fp32 tensors; the measured peak
# also holds small transients it leaves out (layer-norm statistics, the batch's index tensors, the
# grad-norm scalars) and, on the other side, the estimate rounds attention's kernel choices to two
# cases. Measured on this trainer the two agree within 3%; 5% leaves room for another torch.
TOLERANCE = 0.05


def model_steps(m: ModelConfig, batch_size: int, half_precision: bool, steps: int = 2) -> None:
    """Builds the GPT and its optimizer and trains `steps` steps as trainer.train's train_step does."""
    torch.manual_seed(0)
    model = GPT(m)
    optimizer = model.configure_optimizer(0.1, 1e-3, (0.9, 0.95), 1e-8, "cpu")
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):  # the second step holds AdamW's states too
        x, y = (torch.randint(0, m.vocab_size, (batch_size, m.block_size), generator=gen) for _ in range(2))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=half_precision):
            loss = model(x, y)[1]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


@pytest.mark.parametrize("bias", [False, True])
def test_parameter_count_and_flops_match_the_model(bias):
    m = ModelConfig(n_layer=3, n_head=2, n_embd=48, block_size=40, vocab_size=333, bias=bias)
    model = GPT(m)
    assert num_params(m, non_embedding=False) == model.get_num_params(non_embedding=False)
    assert num_params(m) == model.get_num_params()
    assert model.flops_per_token() == 6 * model.get_num_params() + 12 * 3 * 48 * 40
    assert num_params(ModelConfig(vocab_size=50257, bias=True), non_embedding=False) == 124_439_808  # GPT-2


def test_memory_estimate_matches_the_peak_of_real_training_runs(workdir):
    _, common = workdir
    cache = common[0].split("=", 1)[1]
    for dropout in (0.0, 0.1):
        cfg = with_overrides(TrainConfig(), {
            "model.n_layer": 2, "model.n_head": 2, "model.n_embd": 64, "model.block_size": 64,
            "model.dropout": dropout, "batch_size": 4, "schedule.max_iters": 2, "schedule.warmup_iters": 0,
            "eval_interval": 2, "eval_iters": 1, "log_interval": 1, "device": "cpu", "dtype": "float32",
            "checkpoint": "none", "out_dir": f"run_{dropout}", "data.cache_dir": cache})
        measured = peak_tensor_bytes(lambda: train(cfg, log=lambda line: None))
        estimated = step_memory(cfg.model, cfg.batch_size, half_precision=False, device_type="cpu").peak
        assert estimated == pytest.approx(measured, rel=TOLERANCE), (dropout, estimated, measured)


@pytest.mark.parametrize("dropout,half_precision", [(0.0, False), (0.1, False), (0.0, True), (0.1, True)])
def test_memory_estimate_of_activations_matches_real_steps(dropout, half_precision):
    # a small vocabulary, so activations (not logits) make most of the peak
    m = ModelConfig(n_layer=4, n_head=4, n_embd=128, block_size=128, vocab_size=256, dropout=dropout)
    measured = peak_tensor_bytes(lambda: model_steps(m, 8, half_precision))
    est = step_memory(m, 8, half_precision=half_precision, device_type="cpu")
    assert est.activations > est.logits + est.weights
    assert est.peak == pytest.approx(measured, rel=TOLERANCE), (est, measured)


def test_largest_micro_batch_is_the_last_that_fits():
    m = ModelConfig(n_layer=24, n_head=16, n_embd=1024, block_size=1024)  # gpt2_medium
    budget = 11 * 2**30
    largest = largest_micro_batch(m, True, "cuda", budget)
    assert largest >= 1
    assert step_memory(m, largest, True, "cuda").peak <= budget < step_memory(m, largest + 1, True, "cuda").peak
    assert largest_micro_batch(m, True, "cuda", 2**30) == 0  # not even its weights and AdamW states fit


def test_gpu_peaks_match_the_most_specific_name():
    assert gpu_peak_flops("NVIDIA GeForce RTX 4070 Ti") == 80.2e12
    assert gpu_peak_flops("NVIDIA GeForce RTX 4070") == 58.3e12
    assert gpu_peak_flops("NVIDIA H100 PCIe") == 756e12
    assert gpu_peak_flops("NVIDIA A100-SXM4-80GB") == 312e12
    assert gpu_peak_flops("Some Future GPU") is None
