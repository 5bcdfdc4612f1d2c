"""What a run costs before it runs: parameters, FLOPs per token, and the peak memory of a step.

Everything here is computed from the config alone (no model is built), so a plan over many
configs takes milliseconds. `GPT.flops_per_token` and the training loop's MFU use
`flops_per_token` below: the one place training FLOPs are counted.

The memory estimate follows what eager PyTorch keeps alive in this trainer's GPT (trainer/model.py)
during one training step of one micro-batch:

- weights: fp32, 4 bytes a parameter (autocast keeps fp32 masters);
- AdamW states: exp_avg and exp_avg_sq, 8 bytes a parameter, alive from the first step on;
- grads: fp32, 4 bytes a parameter, allocated during backward and freed by zero_grad;
- weight copies: under autocast (bf16/fp16) the half-precision copy of every matmul weight,
  cached for the forward and kept by autograd until its backward, 2 bytes a parameter;
- activations: per layer the tensors autograd saves (`ACTIVATIONS_PER_LAYER`), plus dropout
  masks and, where attention falls back to its math kernel, the T x T attention matrices;
- logits: the loss runs in fp32 (autocast lists cross_entropy as fp32), and the start of
  backward holds its log-softmax output, the gradient arriving at it and the gradient it
  produces: 3 x 4 bytes per position and vocabulary entry (the logits themselves are dropped
  before backward, see `train_step`).

The peak is the weights and AdamW states plus the largest of three moments: the start of backward
(activations, logits, weight copies), the LM head's backward (activations, one logits gradient,
the head's weight gradient) and the optimizer step (all grads plus the step's temporaries).
Under torch.compile fused kernels usually need less. tests/test_estimate.py checks the estimate
against the tensor memory real steps allocate on CPU; bench/memory_estimate.py does so on CUDA too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from trainer.config import ModelConfig

FP32 = 4
HALF = 2  # bf16 and fp16
MASK = 1  # a dropout mask is a bool tensor
# What a GPU's memory holds beyond the tensors: the CUDA context, cuBLAS workspaces and the caching
# allocator's fragmentation (none of which torch.cuda.max_memory_allocated counts).
CUDA_RESERVED_BYTES = 1 << 30

# The tensors autograd saves in one block, as multiples of batch x block x n_embd elements, and
# whether each is the fp32 residual stream (True) or in the compute dtype (False: half precision
# under autocast). The residual stream stays fp32 under autocast: the embeddings are fp32 and
# adding a half-precision branch to them promotes to fp32.
ACTIVATIONS_PER_LAYER = (
    ("ln_1 input (the residual stream)", 1, True),
    ("ln_1 output, c_attn's input", 1, False),
    ("q, k, v (c_attn's output, kept by attention)", 3, False),
    ("attention output, c_proj's input (laid out so that its transpose is contiguous)", 1, False),
    ("ln_2 input (the residual stream)", 1, True),
    ("ln_2 output, c_fc's input", 1, False),
    ("MLP hidden, GELU's input", 4, False),
    ("MLP hidden after GELU, c_proj's input", 4, False),
)
LOGITS_COPIES = 3  # fp32 tensors of batch x block x vocab at the start of backward (see above)

# Dense (no sparsity) bf16/fp16 tensor-core peaks with fp32 accumulation, in TFLOPS, from NVIDIA's
# datasheets and architecture whitepapers; matched against torch.cuda.get_device_name() in order,
# so a more specific name comes before one it contains.
GPU_PEAK_TFLOPS = (
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0), ("L40S", 362.0),
    ("L40", 181.0), ("L4", 121.0), ("A10G", 125.0), ("A10", 125.0), ("V100", 125.0), ("T4", 65.0),
    ("RTX 4090", 165.2), ("RTX 4080", 97.5), ("RTX 4070 Ti", 80.2), ("RTX 4070", 58.3),
    ("RTX 4060 Ti", 44.1), ("RTX 4060", 30.2), ("RTX 3090", 71.0), ("RTX 3080", 59.5),
    ("RTX 3070", 40.6), ("RTX 3060", 25.5),
)


def num_params(m: ModelConfig, non_embedding: bool = True) -> int:
    """Parameters of the GPT `m` describes, counted as `GPT.get_num_params` does: the tied LM
    head once; `non_embedding` leaves out the position embeddings (nanoGPT's convention)."""
    c = m.n_embd
    ln = c * (2 if m.bias else 1)
    block = 2 * ln + 12 * c * c + (3 * c + c + 4 * c + c if m.bias else 0)
    n = m.vocab_size * c + m.block_size * c + m.n_layer * block + ln
    return n - m.block_size * c if non_embedding else n


def flops_per_token(m: ModelConfig) -> int:
    """Training FLOPs per token (PaLM appendix B): 6N for the matmuls' forward and backward, N
    without position embeddings, plus attention's 12 x n_layer x n_embd x block_size."""
    return 6 * num_params(m) + 12 * m.n_layer * m.n_embd * m.block_size


def gpu_peak_flops(device_name: str) -> Optional[float]:
    """The bf16/fp16 peak FLOP/s of the GPU called `device_name`, or None for one not in the table."""
    for name, tflops in GPU_PEAK_TFLOPS:
        if name.lower() in device_name.lower():
            return tflops * 1e12
    return None


def device_peak_flops(device: str) -> Optional[float]:
    """The bf16/fp16 peak FLOP/s of the CUDA device `device` ("cuda", "cuda:1"), or None when its
    name is not in GPU_PEAK_TFLOPS."""
    import torch

    return gpu_peak_flops(torch.cuda.get_device_name(device))


@dataclass(frozen=True)
class StepMemory:
    """Bytes of tensor memory one training step needs, by what holds them."""

    weights: int
    grads: int
    optimizer: int  # AdamW's two states
    weight_copies: int  # autocast's half-precision copies of the matmul weights
    activations: int
    logits: int  # the fp32 loss's tensors at the start of backward
    head_backward: int  # the LM head's backward: one logits gradient and the head's weight gradient
    step_temporaries: int  # the optimizer step's scratch (unfused AdamW)

    @property
    def peak(self) -> int:
        return self.weights + self.optimizer + max(
            self.activations + self.logits + self.weight_copies,
            self.activations + self.head_backward + self.weight_copies,
            self.grads + self.step_temporaries)


def _math_attention_extra(bhtt: int, btc: int, compute: int, half_precision: bool) -> int:
    """What attention's math kernel (CPU attention with dropout) keeps beyond the fused kernels:
    q and k scaled (2 x btc), and per head T x T the fp32 softmax output, dropout's fp32 noise and
    the dropped output, plus that output's half-precision copy for the matmul under autocast."""
    return 2 * compute * btc + (3 * FP32 + (HALF if half_precision else 0)) * bhtt


def step_memory(m: ModelConfig, batch_size: int, half_precision: bool, device_type: str) -> StepMemory:
    """The tensor memory of one training step of `batch_size` sequences of `m.block_size` tokens;
    `half_precision`: under bf16/fp16 autocast; `device_type` "cuda" (fused AdamW, flash or
    memory-efficient attention) or "cpu" (AdamW one tensor at a time; attention with dropout
    falls back to the math kernel, which keeps T x T matrices)."""
    n = num_params(m, non_embedding=False)
    c, t, v = m.n_embd, m.block_size, m.vocab_size
    btc = batch_size * t * c
    compute = HALF if half_precision else FP32
    per_layer = sum(k * (FP32 if residual else compute) for _, k, residual in ACTIVATIONS_PER_LAYER) * btc
    per_layer += FP32 * batch_size * m.n_head * t  # attention's logsumexp, kept for its backward
    if m.dropout > 0:
        per_layer += 2 * MASK * btc  # after attention's projection and after the MLP
        if device_type == "cpu":
            per_layer += _math_attention_extra(batch_size * m.n_head * t * t, btc, compute, half_precision)
    tail = (FP32 + compute) * btc + (MASK * btc if m.dropout > 0 else 0)  # ln_f input and output, embedding dropout
    matmul_params = n - m.block_size * c - m.n_layer * 2 * c * (2 if m.bias else 1) - c * (2 if m.bias else 1)
    largest_param = v * c  # the token embedding, which is the LM head
    return StepMemory(
        weights=FP32 * n,
        grads=FP32 * n,
        optimizer=2 * FP32 * n,
        weight_copies=HALF * matmul_params if half_precision else 0,
        activations=m.n_layer * per_layer + tail,
        logits=LOGITS_COPIES * FP32 * batch_size * t * v,
        head_backward=FP32 * batch_size * t * v + FP32 * largest_param,
        step_temporaries=0 if device_type == "cuda" else 2 * FP32 * largest_param,
    )


def largest_micro_batch(m: ModelConfig, half_precision: bool, device_type: str, budget_bytes: float,
                        limit: int = 4096) -> int:
    """The largest batch_size whose step fits in `budget_bytes` (0 when not even one sequence fits)."""
    if step_memory(m, 1, half_precision, device_type).peak > budget_bytes:
        return 0
    low, high = 1, limit  # the peak grows with the batch: bisect for the last one that fits
    while low < high:
        mid = (low + high + 1) // 2
        if step_memory(m, mid, half_precision, device_type).peak <= budget_bytes:
            low = mid
        else:
            high = mid - 1
    return low
