"""Real training steps of tiny GPTs on the embedded sample corpus (CPU, seeded)."""

import copy
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.configs import with_overrides
from trainer import ConfigError, TrainConfig, eval_points, load_model, train
from trainer.checkpoint import COMPILE_PREFIX, MODEL_ARG_KEYS, load_checkpoint
from trainer.config import DataConfig, ModelConfig, OptimConfig, ScheduleConfig

ROOT = Path(__file__).resolve().parents[1]


def tiny_config(tmp_path, **overrides) -> TrainConfig:
    """A 1-layer GPT with a 32-wide embedding: real training, a second or two per run."""
    cfg = TrainConfig(
        model=ModelConfig(n_layer=1, n_head=2, n_embd=32, block_size=32, dropout=0.0),
        data=DataConfig(name="sample", val_fraction=0.1, cache_dir=str(tmp_path.parent / "data_cache")),
        schedule=ScheduleConfig(lr=3e-3, min_lr=3e-4, max_iters=40, warmup_iters=5),
        optim=OptimConfig(),
        batch_size=4, eval_interval=10, eval_iters=4, log_interval=1,
        out_dir=str(tmp_path / "run"), checkpoint="last",
    )
    return with_overrides(cfg, overrides)


def read_metrics(run_dir, kind):
    lines = (Path(run_dir) / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == kind]


def test_nano_run_on_the_sample_learns_far_below_uniform(tmp_path):
    # the nano preset (conf/model/nano.yaml)
    cfg = tiny_config(tmp_path, **{"model.n_layer": 2, "model.n_embd": 64, "model.block_size": 64,
                                  "schedule.max_iters": 100, "schedule.lr": 1e-2, "schedule.min_lr": 1e-3,
                                  "schedule.warmup_iters": 10, "batch_size": 4, "eval_interval": 50,
                                  "log_interval": 25})
    result = train(cfg)
    assert result.status == "completed"
    assert result.evals[0].val_loss > 10.0  # untrained: about ln(50304)
    assert result.best_val_loss < 7.0, result.best_val_loss  # far below ln(50257) = 10.8
    assert result.tokens_seen == 100 * 4 * 64
    assert result.unique_train_tokens > 1_000_000


def test_a_byte_level_run_learns_below_uniform_and_a_vocabulary_below_257_is_refused(tmp_path):
    cfg = tiny_config(tmp_path, **{"data.tokenizer": "bytes", "model.vocab_size": 320, "schedule.max_iters": 60,
                                  "eval_interval": 30})
    result = train(cfg)
    assert result.evals[0].val_loss > 5.5  # untrained: about ln(320) = 5.77
    assert result.best_val_loss < 4.0, result.best_val_loss  # well below ln(257) = 5.55 (3.4 here)
    assert result.num_params < 50_000  # the 50k-wide GPT-2 head is gone
    with pytest.raises(ConfigError, match=r"model.vocab_size=256 is smaller than the tokenizer's 257 tokens; use at "
                                          r"least 257, best the next multiple of 64 \(320"):
        train(tiny_config(tmp_path / "small", **{"data.tokenizer": "bytes", "model.vocab_size": 256}))


def test_metrics_file_and_result(tmp_path):
    cfg = tiny_config(tmp_path)
    result = train(cfg)
    train_rows, eval_rows = read_metrics(result.out_dir, "train"), read_metrics(result.out_dir, "eval")
    assert [r["iter"] for r in train_rows] == list(range(1, 41))
    assert set(train_rows[0]) >= {"iter", "loss", "lr", "tokens", "epochs", "ms_per_iter", "mfu"}
    assert [r["iter"] for r in eval_rows] == [0, 10, 20, 30, 40]
    assert all(r["val_loss_se"] > 0 for r in eval_rows)
    assert eval_rows[-1]["tokens"] == 40 * 4 * 32 == result.tokens_seen
    assert result.best_val_loss == min(r["val_loss"] for r in eval_rows)
    assert result.num_params_non_embedding < result.num_params
    assert result.checkpoint_path == str(Path(cfg.out_dir) / "ckpt.pt")


def test_a_run_evaluates_at_its_eval_points_including_a_last_iteration_off_the_interval(tmp_path):
    cfg = tiny_config(tmp_path, **{"schedule.max_iters": 25})
    assert eval_points(cfg) == [0, 10, 20, 25]
    assert [m.iter for m in train(cfg).evals] == eval_points(cfg)


def test_evaluations_report_each_eval_batch_on_batches_named_by_what_draws_them(tmp_path):
    first = train(tiny_config(tmp_path / "a"))
    for m in first.evals:
        assert len(m.val_batch_losses) == 4  # eval_iters
        assert sum(m.val_batch_losses) / 4 == pytest.approx(m.val_loss)
        se = torch.tensor(m.val_batch_losses).std().item() / 2
        assert m.val_loss_se == pytest.approx(se)
    # The same batches at every evaluation, in another run, and with another lr ...
    again = train(tiny_config(tmp_path / "b", **{"schedule.lr": 1e-3}))
    assert {m.val_batches for m in first.evals} == {m.val_batches for m in again.evals}
    assert first.evals[0].val_batch_losses == again.evals[0].val_batch_losses  # same untrained model
    # ... and other batches with another seed or block_size.
    names = {train(tiny_config(tmp_path / name, **{key: value, "schedule.max_iters": 10})).evals[0].val_batches
             for name, key, value in (("c", "seed", 7), ("d", "model.block_size", 16))}
    assert len(names | {first.evals[0].val_batches}) == 3


def test_on_eval_can_stop_the_run(tmp_path):
    seen = []

    def stop_at_20(m):
        seen.append(m.iter)
        return "enough" if m.iter == 20 else None

    result = train(tiny_config(tmp_path), on_eval=stop_at_20)
    assert result.status == "stopped" and result.stop_reason == "enough"
    assert seen == [0, 10, 20] and result.iters == 20


def test_resume_continues_exactly(tmp_path):
    full = train(tiny_config(tmp_path / "a", **{"model.dropout": 0.1}))
    cut = tiny_config(tmp_path / "b", **{"model.dropout": 0.1})
    train(cut, on_eval=lambda m: "interrupted" if m.iter == 20 else None)
    resumed = train(tiny_config(tmp_path / "b", **{"model.dropout": 0.1, "init_from": "resume"}))
    assert resumed.status == "completed" and resumed.iters == 40
    a = {r["iter"]: r["loss"] for r in read_metrics(full.out_dir, "train")}
    b = {r["iter"]: r["loss"] for r in read_metrics(resumed.out_dir, "train")}
    assert all(a[i] == b[i] for i in range(21, 41)), [(a[i], b[i]) for i in range(21, 41)]
    assert resumed.best_val_loss == full.best_val_loss


def test_absurd_lr_diverges_without_an_exception_and_keeps_the_good_checkpoint(tmp_path):
    # lr 1e4 (100 at the first step) drives the loss to ~1e5, then past float32 at iteration 5
    cfg = tiny_config(tmp_path, **{"schedule.lr": 1e4, "schedule.min_lr": 1e3, "schedule.warmup_iters": 100,
                                  "optim.grad_clip": 0.0, "eval_interval": 1, "eval_iters": 2,
                                  "schedule.max_iters": 30})
    result = train(cfg)
    assert result.status == "diverged", result
    assert "non-finite" in result.stop_reason
    ckpt = load_checkpoint(Path(cfg.out_dir) / "ckpt.pt")
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert 0 < ckpt["iter_num"] == result.iters - 1


def test_checkpoint_is_nanogpt_format_and_loads_safely(tmp_path):
    result = train(tiny_config(tmp_path))
    raw = torch.load(result.checkpoint_path, map_location="cpu", weights_only=True)  # no pickled code
    assert set(raw) >= {"model", "optimizer", "model_args", "iter_num", "best_val_loss", "config"}
    assert set(raw["model_args"]) == set(MODEL_ARG_KEYS)  # sample.py does GPTConfig(**model_args)
    assert "dataset" not in raw["config"]  # sample.py would then look for a meta.pkl
    assert Path(result.checkpoint_path).stat().st_mode & 0o777 == 0o644
    model = load_model(result.checkpoint_path)
    assert not model.training
    x = torch.zeros(1, 8, dtype=torch.long)
    logits, loss = model(x, x)
    assert logits.shape == (1, 8, 50304) and math.isfinite(loss.item())


@pytest.mark.skipif(not any(map(shutil.which, ("g++", "clang++"))),
                    reason="torch.compile's CPU backend needs a C++ compiler (g++ or clang++)")
def test_compiled_run_matches_eager_and_saves_plain_weights(tmp_path):
    """`compile=true` (nanoGPT's default on a GPU) through torch.compile's CPU backend."""
    overrides = {"schedule.max_iters": 20}
    eager = train(tiny_config(tmp_path / "eager", **overrides))
    compiled = train(tiny_config(tmp_path / "compiled", compile=True, **overrides))
    assert compiled.status == "completed"
    assert [m.val_loss for m in compiled.evals] == pytest.approx([m.val_loss for m in eager.evals], abs=1e-4)
    weights = torch.load(compiled.checkpoint_path, map_location="cpu", weights_only=True)["model"]
    assert not any(k.startswith(COMPILE_PREFIX) for k in weights)  # loads into an uncompiled GPT
    resumed = train(tiny_config(tmp_path / "compiled", compile=True, init_from="resume",
                                **{"schedule.max_iters": 30}))
    assert resumed.status == "completed" and resumed.iters == 30


def test_metrics_hold_one_curve_after_resuming_from_an_older_checkpoint(tmp_path):
    """A run killed after its last checkpoint logged iterations it will train again on resume."""
    full = train(tiny_config(tmp_path / "a"))
    cfg = tiny_config(tmp_path / "b")
    train(cfg, on_eval=lambda m: "killed" if m.iter == 20 else None)
    ckpt = Path(cfg.out_dir) / "ckpt.pt"
    at_20 = ckpt.read_bytes()
    train(tiny_config(tmp_path / "b", init_from="resume", **{"schedule.max_iters": 35}))  # logs to 35
    ckpt.write_bytes(at_20)  # as if killed at 35 with the checkpoint of iteration 20 the last one written
    train(tiny_config(tmp_path / "b", init_from="resume"))
    for kind in ("train", "eval"):
        ours = [(r["iter"], r.get("loss", r.get("val_loss"))) for r in read_metrics(cfg.out_dir, kind)]
        theirs = [(r["iter"], r.get("loss", r.get("val_loss"))) for r in read_metrics(full.out_dir, kind)]
        assert ours == theirs, kind


def test_resume_takes_the_checkpoints_architecture_without_changing_the_callers_config(tmp_path):
    train(tiny_config(tmp_path))
    mine = tiny_config(tmp_path, **{"model.n_embd": 64, "model.n_head": 4, "model.dropout": 0.1,
                                    "init_from": "resume", "schedule.max_iters": 50})
    before = copy.deepcopy(mine)
    resumed = train(mine)
    assert resumed.status == "completed" and resumed.iters == 50
    assert mine == before  # the caller's object, untouched
    saved = load_checkpoint(resumed.checkpoint_path)
    assert saved["model_args"]["n_embd"] == 32 and saved["model_args"]["n_head"] == 2  # nanoGPT's rule
    assert saved["model_args"]["dropout"] == 0.1 and saved["config"]["model"]["n_embd"] == 32


def test_resumes_from_a_nanogpt_checkpoint_saved_by_torch_compile(tmp_path):
    """nanoGPT saves the compiled model's state dict (keys prefixed `_orig_mod.`) and its own config."""
    first = train(tiny_config(tmp_path / "ours"))
    ours = torch.load(first.checkpoint_path, map_location="cpu", weights_only=True)
    theirs_dir = tmp_path / "theirs" / "run"
    theirs_dir.mkdir(parents=True)
    nanogpt_config = {"out_dir": "out", "learning_rate": 6e-4, "max_iters": 600000, "compile": True,
                      "dataset": "openwebtext", "init_from": "scratch"}
    # torch.compile's prefix, and the causal-mask buffer nanoGPT kept per block under torch < 2
    mask = {f"{COMPILE_PREFIX}transformer.h.0.attn.bias": torch.tril(torch.ones(1, 1, 32, 32))}
    torch.save({"model": {**{COMPILE_PREFIX + k: v for k, v in ours["model"].items()}, **mask},
                "optimizer": ours["optimizer"], "model_args": ours["model_args"], "iter_num": 40,
                "best_val_loss": torch.tensor(ours["best_val_loss"]).item(), "config": nanogpt_config},
               theirs_dir / "ckpt.pt")
    model = load_model(theirs_dir / "ckpt.pt")
    assert torch.equal(model.lm_head.weight, ours["model"]["lm_head.weight"])
    resumed = train(tiny_config(tmp_path / "theirs", **{"init_from": "resume", "schedule.max_iters": 50}))
    assert resumed.status == "completed" and resumed.iters == 50


def test_bad_values_fail_before_training(tmp_path):
    with pytest.raises(ConfigError, match="model.n_embd=30 .*divisible by model.n_head=4"):
        train(tiny_config(tmp_path, **{"model.n_embd": 30, "model.n_head": 4}))
    with pytest.raises(ConfigError, match="schedule.name='linear'.*cosine, constant, wsd"):
        train(tiny_config(tmp_path, **{"schedule.name": "linear"}))
    with pytest.raises(ConfigError, match="init_from=resume but there is no checkpoint"):
        train(tiny_config(tmp_path, init_from="resume"))
    with pytest.raises(ConfigError, match="float16.*CUDA"):
        train(tiny_config(tmp_path, dtype="float16", device="cpu"))
    assert not (tmp_path / "run").exists()


def test_plan_warns_when_the_data_repeats(tmp_path, capsys):
    train(tiny_config(tmp_path, **{"schedule.max_iters": 1, "eval_iters": 1, "schedule.warmup_iters": 0}))
    out = capsys.readouterr().out
    assert "unique training tokens" in out and "planned: 1 iterations" in out
    assert "WARNING" not in out  # well under one epoch of the sample

    import pyarrow as pa
    import pyarrow.parquet as pq

    small = tmp_path / "small.parquet"  # eight short documents: a few hundred tokens each split
    pq.write_table(pa.table({"text": [f"document {i}: " + "to be or not to be, that is the question. " * 12
                                      for i in range(8)]}), small)
    cfg = tiny_config(tmp_path / "small", **{"schedule.max_iters": 20, "eval_interval": 20, "eval_iters": 1,
                                             "schedule.warmup_iters": 0})
    cfg.data = DataConfig(name="parquet", files=[str(small)], val_fraction=0.25, cache_dir=str(tmp_path / "cache"))
    result = train(cfg)
    out = capsys.readouterr().out
    epochs = 20 * 4 * 32 / result.unique_train_tokens
    assert epochs > 2 and f"WARNING: the run repeats its training data {epochs:.1f} times" in out


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "trainer", *args], capture_output=True, text=True, cwd=cwd,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})


def test_cli_trains_from_hydra_configs_and_rejects_typos(tmp_path):
    ok = run_cli("model=nano", "schedule.max_iters=4", "eval_interval=2", "eval_iters=2", "batch_size=2",
                 f"out_dir={tmp_path / 'run'}", f"data.cache_dir={tmp_path / 'cache'}", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "completed: best val loss" in ok.stdout and (tmp_path / "run" / "ckpt.pt").is_file()
    typo = run_cli("schedule.lrr=1e-3", cwd=tmp_path)
    assert typo.returncode != 0 and "lrr" in typo.stderr


def test_the_logged_records_leave_out_lines_a_kill_cut_short(tmp_path):
    from trainer import logged_evals, logged_records

    path = tmp_path / "metrics.jsonl"
    eval_record = {"type": "eval", "iter": 2, "tokens": 64, "epochs": 0.01, "lr": 1e-3, "train_loss": 9.0,
                   "val_loss": 9.5, "val_loss_se": 0.1, "best_val_loss": 9.5, "val_batch_losses": [9.4, 9.6], "val_batches": "ab", "lr_area": 0.1}
    path.write_text(json.dumps({"type": "train", "iter": 1, "loss": 10.0}) + "\n" + json.dumps(eval_record) + "\n"
                    + "[1, 2]\n" + json.dumps(eval_record))  # a non-record, then a whole record without its newline
    records, cut = logged_records(path)
    assert [r["type"] for r in records] == ["train", "eval"] and cut == 2
    assert [(m.iter, m.val_loss) for m in logged_evals(path)] == [(2, 9.5)]
    assert logged_evals(tmp_path / "absent.jsonl") == []
