import pytest
import torch

from trainer.model import GPT, GPTConfig


def test_gpt2_parameter_count_matches_nanogpt():
    # GPT-2 small as OpenAI shipped it (bias, vocab 50257): nanoGPT reports 123.65M without
    # position embeddings; 124.44M in all
    model = GPT(GPTConfig(n_layer=12, n_head=12, n_embd=768, block_size=1024, bias=True, vocab_size=50257))
    assert model.get_num_params(non_embedding=False) == 124_439_808
    assert model.get_num_params() == 123_653_376


def test_state_dict_uses_nanogpt_names_and_ties_head_to_embedding():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, bias=True, vocab_size=64))
    names = set(model.state_dict())
    expected = {
        "transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight", "transformer.ln_f.bias",
        "lm_head.weight",
        *(f"transformer.h.0.{m}.{p}" for m in ("ln_1", "ln_2", "attn.c_attn", "attn.c_proj", "mlp.c_fc",
                                                "mlp.c_proj") for p in ("weight", "bias")),
    }
    assert names == expected
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_residual_projections_get_scaled_init():
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=8, n_head=4, n_embd=256, block_size=16, bias=False, vocab_size=512)
    model = GPT(cfg)
    proj_std = model.transformer.h[0].mlp.c_proj.weight.std().item()
    fc_std = model.transformer.h[0].mlp.c_fc.weight.std().item()
    assert proj_std == pytest.approx(0.02 / (2 * cfg.n_layer) ** 0.5, rel=0.05)
    assert fc_std == pytest.approx(0.02, rel=0.05)


def test_forward_returns_logits_and_loss_like_nanogpt():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, bias=False, vocab_size=100))
    idx, targets = torch.randint(0, 100, (2, 3, 16))
    logits, loss = model(idx, targets)
    assert logits.shape == (3, 16, 100)
    assert loss.item() == pytest.approx(torch.log(torch.tensor(100.0)).item(), rel=0.05)  # untrained: ~uniform
    logits, loss = model(idx)
    assert logits.shape == (3, 1, 100) and loss is None


def test_attention_is_causal():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, bias=False, vocab_size=100)).eval()
    idx = torch.randint(0, 100, (1, 16))
    changed = idx.clone()
    changed[0, 10:] = (changed[0, 10:] + 1) % 100
    a, _ = model(idx, idx)
    b, _ = model(changed, changed)
    assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)
    assert not torch.allclose(a[0, 10:], b[0, 10:])


def test_indivisible_heads_fail_with_the_values():
    with pytest.raises(ValueError, match="model.n_embd=100 is invalid: must be divisible by model.n_head=3"):
        GPT(GPTConfig(n_layer=1, n_head=3, n_embd=100, block_size=8, vocab_size=64))


def test_weight_decay_only_on_matrices():
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, bias=True, vocab_size=64))
    opt = model.configure_optimizer(0.1, 1e-3, (0.9, 0.95), 1e-8, "cpu")
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and all(p.dim() == 2 for p in decayed["params"])
    assert plain["weight_decay"] == 0.0 and all(p.dim() == 1 for p in plain["params"])
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == model.get_num_params(False)
