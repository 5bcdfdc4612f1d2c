"""Compatibility with nanoGPT's own code, run only when a checkout is given:

    git clone https://github.com/karpathy/nanoGPT /path/to/nanoGPT
    NANOGPT_DIR=/path/to/nanoGPT python -m pytest tests/test_nanogpt_compat.py

tests/test_train.py already checks the checkpoint format against a dict shaped like nanoGPT's;
these tests use nanoGPT's model.py itself: the same weights compute the same loss and gradients
in both models, nanoGPT's optimizer state resumes in our trainer, and nanoGPT's loading code (as
in its sample.py and train.py) builds its model from our checkpoint.
"""

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

from tests.configs import with_overrides
from trainer import TrainConfig, load_model, train
from trainer.checkpoint import COMPILE_PREFIX
from trainer.config import DataConfig, ModelConfig, OptimConfig, ScheduleConfig
from trainer.model import GPT, GPTConfig

NANOGPT_DIR = os.environ.get("NANOGPT_DIR")
pytestmark = pytest.mark.skipif(
    not NANOGPT_DIR or not (Path(NANOGPT_DIR) / "model.py").is_file(),
    reason="set NANOGPT_DIR to a checkout of github.com/karpathy/nanoGPT to run these",
)

ARGS = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, bias=False, vocab_size=50304, dropout=0.0)


@pytest.fixture(scope="module")
def nanogpt():
    """nanoGPT's model.py as a module (imported under another name: it is not a package)."""
    spec = importlib.util.spec_from_file_location("nanogpt_model", Path(NANOGPT_DIR) / "model.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["nanogpt_model"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("nanogpt_model", None)


def tiny_config(run_dir, **kw) -> TrainConfig:
    cfg = TrainConfig(
        model=ModelConfig(**ARGS),
        data=DataConfig(name="sample", val_fraction=0.1, cache_dir=str(Path(run_dir).parent / "data_cache")),
        schedule=ScheduleConfig(lr=1e-3, min_lr=1e-4, max_iters=10, warmup_iters=2),
        optim=OptimConfig(), batch_size=4, eval_interval=5, eval_iters=2, log_interval=1,
        out_dir=str(run_dir), checkpoint="last", device="cpu", dtype="float32",
    )
    return with_overrides(cfg, kw)


@pytest.mark.parametrize("bias", [False, True])
def test_same_weights_give_the_same_loss_and_gradients(nanogpt, bias):
    args = {**ARGS, "bias": bias}
    torch.manual_seed(0)
    theirs = nanogpt.GPT(nanogpt.GPTConfig(**args))
    ours = GPT(GPTConfig(**args))
    assert list(ours.state_dict()) == list(theirs.state_dict())  # same names, same order
    ours.load_state_dict(theirs.state_dict())
    x = torch.randint(0, 50257, (3, 32))
    y = torch.randint(0, 50257, (3, 32))
    logits_t, loss_t = theirs(x, y)
    logits_o, loss_o = ours(x, y)
    torch.testing.assert_close(logits_o, logits_t)
    torch.testing.assert_close(loss_o, loss_t)
    loss_t.backward()
    loss_o.backward()
    for (name, p_o), (_, p_t) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(p_o.grad, p_t.grad, msg=name)
    # generation path: the last position only, in both
    torch.testing.assert_close(ours.eval()(x)[0], theirs.eval()(x)[0])
    assert ours.get_num_params() == theirs.get_num_params()


def test_optimizer_groups_match_so_nanogpt_optimizer_state_loads(nanogpt):
    torch.manual_seed(0)
    theirs = nanogpt.GPT(nanogpt.GPTConfig(**ARGS))
    ours = GPT(GPTConfig(**ARGS))
    ours.load_state_dict(theirs.state_dict())
    opt_t = theirs.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    opt_o = ours.configure_optimizer(0.1, 1e-3, (0.9, 0.95), 1e-8, "cpu")
    x = torch.randint(0, 50257, (2, 32))
    theirs(x, x)[1].backward()
    opt_t.step()
    state = opt_t.state_dict()
    assert [len(g["params"]) for g in state["param_groups"]] == \
           [len(g["params"]) for g in opt_o.state_dict()["param_groups"]]
    opt_o.load_state_dict(state)
    for p_o, p_t in zip(ours.parameters(), theirs.parameters()):  # group order = parameter order
        if p_t in opt_t.state:
            assert p_o.shape == opt_t.state[p_t]["exp_avg"].shape


def test_resumes_a_checkpoint_written_by_nanogpt_code(nanogpt, tmp_path):
    """The dict nanoGPT's train.py saves after a compiled run: `_orig_mod.` keys, a tensor
    best_val_loss, its flat config, and the optimizer state of its configure_optimizers."""
    torch.manual_seed(0)
    model = nanogpt.GPT(nanogpt.GPTConfig(**ARGS))
    optimizer = model.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    for _ in range(3):
        x = torch.randint(0, 50257, (2, 32))
        model(x, x)[1].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    run = tmp_path / "run"
    run.mkdir()
    torch.save({
        "model": {COMPILE_PREFIX + k: v for k, v in model.state_dict().items()},
        "optimizer": optimizer.state_dict(),
        "model_args": dict(ARGS),
        "iter_num": 5,
        "best_val_loss": torch.tensor(10.5),
        "config": {"dataset": "shakespeare", "compile": True, "learning_rate": 1e-3, "out_dir": str(run)},
    }, run / "ckpt.pt")
    loaded = load_model(run / "ckpt.pt")
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    result = train(tiny_config(run, init_from="resume"))
    assert result.status == "completed" and result.iters == 10
    assert [e.iter for e in result.evals] == [10]


def test_nanogpt_loading_code_builds_its_model_from_our_checkpoint(nanogpt, tmp_path):
    result = train(tiny_config(tmp_path / "run"))
    # what nanoGPT's sample.py does (train.py's resume is the same plus the optimizer)
    checkpoint = torch.load(result.checkpoint_path, map_location="cpu")  # torch's default weights_only
    assert "dataset" not in checkpoint["config"]  # else sample.py looks for data/<dataset>/meta.pkl
    theirs = nanogpt.GPT(nanogpt.GPTConfig(**checkpoint["model_args"]))
    theirs.load_state_dict(checkpoint["model"])
    theirs.eval()
    optimizer = theirs.configure_optimizers(0.1, 1e-3, (0.9, 0.95), "cpu")
    optimizer.load_state_dict(checkpoint["optimizer"])
    ours = load_model(result.checkpoint_path)
    x = torch.randint(0, 50257, (1, 8))
    torch.testing.assert_close(theirs(x)[0], ours(x)[0])
    torch.manual_seed(1)
    out = theirs.generate(x, 5, temperature=0.8, top_k=200)
    assert out.shape == (1, 13)
