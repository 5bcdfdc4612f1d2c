"""optim=muon: which parameters Muon takes, its LR through the schedule, real training and resume."""

import pytest
import torch

from tests.test_train import read_metrics, tiny_config
from trainer import CheckpointError, train
from trainer.config import OptimConfig
from trainer.model import GPT, GPTConfig
from trainer.optim import MuonAdamW, build_optimizer, set_lr


def _model():
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, bias=True, vocab_size=64))


def test_muon_takes_the_blocks_matrices_and_adamw_the_rest():
    model = _model()
    opt = build_optimizer(model, OptimConfig(name="muon", weight_decay=0.1), lr=1e-3, device_type="cpu")
    assert isinstance(opt, MuonAdamW)
    names = {id(p): n for n, p in model.named_parameters()}
    muon = {names[id(p)] for g in opt.muon.param_groups for p in g["params"]}
    adamw = {names[id(p)] for g in opt.adamw.param_groups for p in g["params"]}
    # 2 blocks x (attn c_attn, attn c_proj, mlp c_fc, mlp c_proj) weights
    assert muon == {f"transformer.h.{i}.{m}.weight" for i in range(2)
                    for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    assert "transformer.wte.weight" in adamw and "transformer.wpe.weight" in adamw
    assert not muon & adamw
    assert len(muon) + len(adamw) == len(list(model.parameters()))  # every parameter, once (wte = lm_head)


def test_both_lrs_follow_the_schedule_in_proportion():
    opt = build_optimizer(_model(), OptimConfig(name="muon", muon_lr=0.02), lr=1e-3, device_type="cpu")
    set_lr(opt, 5e-4)  # half the peak
    assert {g["lr"] for g in opt.adamw.param_groups} == {5e-4}
    assert [g["lr"] for g in opt.muon.param_groups] == [pytest.approx(0.01)]


def test_muon_run_learns_and_resumes_exactly(tmp_path):
    muon = {"optim.name": "muon", "optim.muon_lr": 0.02}
    full = train(tiny_config(tmp_path / "a", **muon))
    assert full.status == "completed"
    assert full.best_val_loss < full.evals[0].val_loss - 1.0, (full.evals[0].val_loss, full.best_val_loss)
    ckpt = torch.load(tmp_path / "a" / "run" / "ckpt.pt", weights_only=True)
    assert set(ckpt["optimizer"]) == {"adamw", "muon"} and ckpt["config"]["optim"]["name"] == "muon"

    train(tiny_config(tmp_path / "b", **muon), on_eval=lambda m: "interrupted" if m.iter == 20 else None)
    resumed = train(tiny_config(tmp_path / "b", **muon, init_from="resume"))
    a = {r["iter"]: r["loss"] for r in read_metrics(full.out_dir, "train")}
    b = {r["iter"]: r["loss"] for r in read_metrics(resumed.out_dir, "train")}
    assert all(a[i] == b[i] for i in range(21, 41)), [(a[i], b[i]) for i in range(21, 41)]


def test_muon_trains_differently_from_adamw(tmp_path):
    adamw = train(tiny_config(tmp_path / "a"))
    muon = train(tiny_config(tmp_path / "m", **{"optim.name": "muon"}))
    assert [e.val_loss for e in adamw.evals][1:] != [e.val_loss for e in muon.evals][1:]


def test_resume_with_another_optimizer_is_one_error_naming_both(tmp_path):
    train(tiny_config(tmp_path, **{"schedule.max_iters": 10}))
    with pytest.raises(CheckpointError, match="trained with optim=adamw, which optim=muon cannot continue"):
        train(tiny_config(tmp_path, **{"optim.name": "muon", "init_from": "resume"}))


@pytest.mark.parametrize("key,value,message", [
    ("optim.name", "sgd", "optim.name='sgd' is invalid: valid: adamw, muon"),
    ("optim.muon_lr", 0.0, "optim.muon_lr=0.0 is invalid: must be a finite number > 0"),
    ("optim.muon_momentum", 1.0, "optim.muon_momentum=1.0 is invalid: must be in [0, 1)"),
])
def test_bad_optimizer_settings_fail_before_training(tmp_path, key, value, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        train(tiny_config(tmp_path, **{key: value}))
