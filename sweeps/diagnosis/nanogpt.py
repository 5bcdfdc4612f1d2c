"""nanoGPT's side of a diagnosis: its settings (defaults, config file, `--key=value` arguments),
its console log, and its settings in this project's names.

nanoGPT's `train.py` starts from the defaults below (its module globals, github.com/karpathy/nanoGPT
at commit 3adf61e), then `configurator.py` runs each config file given (plain Python assignments)
and each `--key=value` argument in order, the value read with `ast.literal_eval` (else kept as a
string) and required to have the default's type. What a user gave is read the same way here; the
rest stays at the default and is listed as assumed, so the diagnosis can say how sure it is.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from sweeps.diagnosis.errors import DiagnosisError

# nanoGPT train.py's defaults (a GPT-2 124M on OpenWebText). dtype's default there depends on the
# GPU (bfloat16 where supported, else float16); nothing here depends on it.
NANOGPT_DEFAULTS: Dict[str, Any] = {
    "out_dir": "out", "eval_interval": 2000, "log_interval": 1, "eval_iters": 200, "eval_only": False,
    "always_save_checkpoint": True, "init_from": "scratch",
    "wandb_log": False, "wandb_project": "owt", "wandb_run_name": "gpt2",
    "dataset": "openwebtext", "gradient_accumulation_steps": 5 * 8, "batch_size": 12, "block_size": 1024,
    "n_layer": 12, "n_head": 12, "n_embd": 768, "dropout": 0.0, "bias": False,
    "learning_rate": 6e-4, "max_iters": 600000, "weight_decay": 1e-1, "beta1": 0.9, "beta2": 0.95,
    "grad_clip": 1.0,
    "decay_lr": True, "warmup_iters": 2000, "lr_decay_iters": 600000, "min_lr": 6e-5,
    "backend": "nccl", "device": "cuda", "dtype": "bfloat16", "compile": True,
}
NANOGPT_VOCAB_SIZE = 50304  # what train.py uses when the dataset has no meta.pkl

# Lines of nanoGPT's console output (train.py and model.py).
EVAL_LINE = re.compile(r"^step (\d+): train loss (\S+), val loss (\S+)")
ITER_LINE = re.compile(r"^iter (\d+): loss (\S+), time ([\d.]+)ms, mfu (\S+)%")
OVERRIDE_LINE = re.compile(r"^Overriding: (\w+) = (.*)$")
CONFIG_FILE_LINE = re.compile(r"^Overriding config with (.+):$")  # then the file's text, printed whole
TOKENS_PER_ITER_LINE = re.compile(r"^tokens per iteration will be: ([\d,]+)")
PARAMS_LINE = re.compile(r"^number of parameters: ([\d.]+)M")
VOCAB_LINE = re.compile(r"^found vocab_size = (\d+)")

_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow, ast.Mod: operator.mod}


@dataclass
class NanoGPTLog:
    """What a nanoGPT console log holds."""

    evals: List[tuple]  # (iter, train loss, val loss)
    iters: List[tuple]  # (iter, loss)
    overrides: Dict[str, Any]  # its "Overriding: key = value" lines (the arguments train.py was given)
    config_files: Dict[str, str] = field(default_factory=dict)  # config files train.py printed: name -> text
    tokens_per_iter: Optional[int] = None  # its "tokens per iteration" line: printed after every override
    num_params: Optional[int] = None  # nanoGPT's count (without position embeddings), to 10k
    vocab_size: Optional[int] = None
    lines: int = 0


@dataclass
class NanoGPTSettings:
    """nanoGPT's settings for a run: every key, and which were given (the rest are defaults)."""

    values: Dict[str, Any]
    given: Dict[str, str] = field(default_factory=dict)  # key -> where it came from
    # The log holds train.py's start (its settings are printed before "tokens per iteration"): a
    # key it does not show overridden ran at nanoGPT's default, known rather than assumed.
    complete: bool = False

    def assumed(self, keys) -> List[str]:
        """The keys among `keys` that nobody gave: nanoGPT's defaults stand in for them."""
        return [] if self.complete else [k for k in keys if k not in self.given]


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def read_log(path: Path) -> NanoGPTLog:
    """Parse a nanoGPT console log; DiagnosisError when it cannot be read or holds no val line."""
    try:
        text = Path(path).read_text(errors="replace")
    except OSError as e:
        raise DiagnosisError(f"cannot read {path}: {e.strerror or e}; pass a nanoGPT console log "
                             f"(train.py's output saved to a file) or a run dir of ours") from None
    log = NanoGPTLog(evals=[], iters=[], overrides={})
    config_file: Optional[List[str]] = None  # the lines of a config file being printed
    for raw in text.splitlines():
        line = raw.strip()
        log.lines += 1
        if config_file is not None:
            if not (OVERRIDE_LINE.match(line) or CONFIG_FILE_LINE.match(line) or TOKENS_PER_ITER_LINE.match(line)):
                config_file.append(raw)
                continue
            config_file = None
        if m := CONFIG_FILE_LINE.match(line):
            config_file = []
            log.config_files[m[1]] = config_file  # type: ignore[assignment]
        elif m := EVAL_LINE.match(line):
            log.evals.append((int(m[1]), _float(m[2].rstrip(",")), _float(m[3].rstrip(","))))
        elif m := ITER_LINE.match(line):
            log.iters.append((int(m[1]), _float(m[2].rstrip(","))))
        elif m := OVERRIDE_LINE.match(line):
            log.overrides[m[1]] = _literal(m[2])
        elif m := TOKENS_PER_ITER_LINE.match(line):
            log.tokens_per_iter = int(m[1].replace(",", ""))
        elif m := PARAMS_LINE.match(line):
            log.num_params = round(float(m[1]) * 1e6)
        elif m := VOCAB_LINE.match(line):
            log.vocab_size = int(m[1])
    log.config_files = {name: "\n".join(lines) for name, lines in log.config_files.items()}
    if not log.evals and not log.iters:
        raise DiagnosisError(f"{path}: no nanoGPT lines in it (`step N: train loss X, val loss Y` or "
                             f"`iter N: loss X, time Yms, mfu Z%`); pass train.py's console output")
    if not log.evals:
        raise DiagnosisError(f"{path}: {len(log.iters)} `iter` lines but no `step N: train loss X, val loss Y` "
                             f"line; the diagnosis needs evaluations: run train.py with an --eval_interval "
                             f"below --max_iters and save its whole output")
    return log


def _literal(text: str) -> Any:
    """nanoGPT's reading of a value: `ast.literal_eval`, else the string itself."""
    try:
        return ast.literal_eval(text)
    except (SyntaxError, ValueError):
        return text


def _check_type(key: str, value: Any, where: str) -> Any:
    if key not in NANOGPT_DEFAULTS:
        raise DiagnosisError(f"{where}: {key!r} is not a nanoGPT train.py setting; valid: "
                             f"{', '.join(sorted(NANOGPT_DEFAULTS))}")
    default = NANOGPT_DEFAULTS[key]
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # nanoGPT itself would refuse 1 for a float; the meaning is plain
    if type(value) is not type(default):
        raise DiagnosisError(f"{where}: {key}={value!r} is a {type(value).__name__}; nanoGPT's {key} is a "
                             f"{type(default).__name__} (default {default!r})")
    return value


def _evaluate(node: ast.AST) -> Any:
    """A config file's right-hand side: a literal or arithmetic on literals (`5 * 8`)."""
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    return ast.literal_eval(node)


def read_config_file(path: Path) -> Dict[str, Any]:
    """The settings a nanoGPT config file (`config/*.py`) assigns."""
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise DiagnosisError(f"--config {path}: cannot read it ({e.strerror or e}); pass the nanoGPT config "
                             f"file train.py was given (plain assignments as in nanoGPT's config/*.py)") from None
    return config_settings(text, f"--config {path}")


def config_settings(text: str, where: str) -> Dict[str, Any]:
    """The settings a config file's text assigns. Statements other than plain assignments
    (imports, `str(time.time())`) are skipped: none sets a value the diagnosis reads."""
    try:
        tree = ast.parse(text)
    except SyntaxError as e:
        raise DiagnosisError(f"{where}: not Python (line {e.lineno}: {e.msg}); pass the nanoGPT config "
                             f"file train.py was given") from None
    found: Dict[str, Any] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            key = node.targets[0].id
            if key not in NANOGPT_DEFAULTS:
                continue  # train.py execs the file: a helper variable of its own
            try:
                value = _evaluate(node.value)
            except (ValueError, TypeError, ZeroDivisionError, SyntaxError):
                continue  # computed at run time (wandb_run_name = 'x' + str(time.time()))
            found[key] = _check_type(key, value, f"{where}, line {node.lineno}")
    return found


def parse_arguments(arguments: List[str]) -> Dict[str, Any]:
    """nanoGPT's `--key=value` arguments, read as its configurator reads them."""
    found: Dict[str, Any] = {}
    for arg in arguments:
        if not arg.startswith("--") or "=" not in arg:
            raise DiagnosisError(f"{arg!r}: nanoGPT settings are given as --key=value (e.g. --batch_size=16); "
                                 f"a config file as --config FILE")
        key, _, text = arg[2:].partition("=")
        found[key] = _check_type(key, _literal(text), arg)
    return found


def settings_of(log: NanoGPTLog, config_file: Optional[Path], arguments: List[str]) -> NanoGPTSettings:
    """The run's settings: nanoGPT's defaults, then what its log recorded (the config files it
    printed, its `Overriding:` lines), then the config file, then the arguments (nanoGPT's own
    order for the last two)."""
    values, given = dict(NANOGPT_DEFAULTS), {}
    sources = [(f"the log's copy of {name}", config_settings(text, f"{name} as printed in the log"))
               for name, text in log.config_files.items()]
    sources.append(("the log's Overriding lines",
                    {k: v for k, v in log.overrides.items() if k in NANOGPT_DEFAULTS}))
    if config_file is not None:
        sources.append((f"--config {config_file}", read_config_file(config_file)))
    sources.append(("the arguments", parse_arguments(arguments)))
    for where, found in sources:
        for key, value in found.items():
            values[key] = value
            given[key] = where
    return NanoGPTSettings(values, given, complete=log.tokens_per_iter is not None)


def train_config_dict(s: Dict[str, Any], vocab_size: Optional[int]) -> Dict[str, Any]:
    """nanoGPT's settings as a TrainConfig dict in this project's names (same schedule, model and
    batch). `decay_lr=False` is a constant LR without warmup, as nanoGPT runs it."""
    decays = bool(s["decay_lr"])
    return {
        "model": {"n_layer": s["n_layer"], "n_head": s["n_head"], "n_embd": s["n_embd"],
                  "block_size": s["block_size"], "bias": s["bias"], "dropout": s["dropout"],
                  "vocab_size": vocab_size or NANOGPT_VOCAB_SIZE},
        "schedule": {"name": "cosine" if decays else "constant", "lr": s["learning_rate"],
                     "min_lr": min(s["min_lr"], s["learning_rate"]), "max_iters": max(1, s["max_iters"]),
                     "warmup_iters": s["warmup_iters"] if decays else 0,
                     "lr_decay_iters": s["lr_decay_iters"]},
        "optim": {"weight_decay": s["weight_decay"], "beta1": s["beta1"], "beta2": s["beta2"],
                  "grad_clip": s["grad_clip"]},
        "batch_size": s["batch_size"], "gradient_accumulation_steps": s["gradient_accumulation_steps"],
        "eval_interval": s["eval_interval"], "eval_iters": s["eval_iters"], "log_interval": s["log_interval"],
    }
