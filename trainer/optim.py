"""The optimizers a run can train with: `optim=adamw` (nanoGPT's) and `optim=muon`.

AdamW: weight decay on 2-D tensors (matmuls, embeddings) only, fused on CUDA, at the schedule's
LR; its state is nanoGPT's checkpoint format.

Muon: torch's `torch.optim.Muon` (momentum orthogonalised by Newton-Schulz) for the 2-D weights
inside the transformer blocks, at `optim.muon_lr`; AdamW as above for everything else (token and
position embeddings, which the head shares, norms, biases), at the schedule's LR. Muon is made for
hidden matrices only: an embedding's rows are looked up one at a time, not multiplied as a whole.
Both LRs follow the same schedule: at every step each is its peak times `get_lr(it) / lr`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from trainer.config import ConfigError, OptimConfig

if TYPE_CHECKING:
    from trainer.model import GPT

BLOCKS_PREFIX = "transformer.h."  # the transformer blocks' parameters, as GPT names them


class MuonAdamW:
    """Muon for the blocks' 2-D weights and AdamW for the rest, stepped as one optimizer.

    GradScaler and the training loop need only `param_groups`, `step`, `zero_grad` and the state
    dicts; `set_lr(lr)` sets AdamW's groups to `lr` and Muon's to `lr * muon_lr / base_lr`, so a
    resumed run takes its LRs from its config, never from the checkpoint's param groups.
    """

    def __init__(self, muon: torch.optim.Muon, adamw: torch.optim.AdamW, muon_lr: float, base_lr: float):
        self.muon, self.adamw = muon, adamw
        self.muon_per_lr = muon_lr / base_lr

    @property
    def param_groups(self) -> list:
        return self.adamw.param_groups + self.muon.param_groups

    def set_lr(self, lr: float) -> None:
        for group in self.adamw.param_groups:
            group["lr"] = lr
        for group in self.muon.param_groups:
            group["lr"] = lr * self.muon_per_lr

    def step(self, closure=None):
        loss = self.adamw.step(closure)
        self.muon.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adamw.zero_grad(set_to_none=set_to_none)
        self.muon.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"adamw": self.adamw.state_dict(), "muon": self.muon.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.adamw.load_state_dict(state["adamw"])
        self.muon.load_state_dict(state["muon"])


def adamw(params: list, weight_decay: float, lr: float, betas: tuple, eps: float,
          device_type: str) -> torch.optim.AdamW:
    """AdamW over `params` with weight decay on the 2-D ones only (nanoGPT's rule), fused on CUDA."""
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=device_type == "cuda")


def build_optimizer(model: "GPT", o: OptimConfig, lr: float, device_type: str):
    """The run's optimizer for `model`, named by `o.name`, at peak LR `lr`."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if o.name == "adamw":
        return adamw([p for _, p in named], o.weight_decay, lr, (o.beta1, o.beta2), o.eps, device_type)
    if o.name == "muon":
        hidden = [p for n, p in named if n.startswith(BLOCKS_PREFIX) and p.dim() == 2]
        rest = [p for n, p in named if not (n.startswith(BLOCKS_PREFIX) and p.dim() == 2)]
        muon = torch.optim.Muon(hidden, lr=o.muon_lr, weight_decay=o.weight_decay, momentum=o.muon_momentum)
        rest_adamw = adamw(rest, o.weight_decay, lr, (o.beta1, o.beta2), o.eps, device_type)
        return MuonAdamW(muon, rest_adamw, o.muon_lr, lr)
    raise ConfigError(f"optim.name={o.name!r} is invalid", "optim.name")


def set_lr(optimizer, lr: float) -> None:
    """Set the optimizer's LR for this step (Muon's follows in proportion)."""
    if isinstance(optimizer, MuonAdamW):
        optimizer.set_lr(lr)
        return
    for group in optimizer.param_groups:
        group["lr"] = lr

