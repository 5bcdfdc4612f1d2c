"""A sweep's `params:` (Hydra's sweep grammar) -> Optuna distributions, checked before any training.

Each entry maps a config path (`schedule.lr`) or a config group (`model`) to a string in Hydra's
override grammar, parsed by hydra-core's own parser:

    choice(a, b, c)        -> CategoricalDistribution([a, b, c])    (also the simple form `a,b,c`)
    range(start, stop[, step])
                           -> the values Hydra's range holds: stop EXCLUDED, as Python's range.
                              ints: IntDistribution(start, last, step); floats: FloatDistribution
                              (start, last, step=step). tag(log, range(a, b)) needs ints, step 1.
    interval(a, b)         -> FloatDistribution(a, b); IntDistribution when both bounds are ints,
                              unless the field is a float one (interval(0, 1) for weight decay stays
                              continuous); tag(log, interval(a, b)) -> log scale.
    a plain value          -> fixed: a one-value categorical, applied to every trial.

A sweep's `when:` adds params searched only in the trials where another param has one value, so
each branch of a choice has its own knobs (each optimizer its own LR range):

    params:
      optim: choice(adamw, muon)
    when:
      optim=muon:
        optim.muon_lr: tag(log, interval(3e-3, 1e-1))

The condition names a choice() of `params:` and one of its values; a key is in `params:` or under
one condition, never both, and the grid sampler (which needs every param in every trial) refuses
conditions.

Every error names the key, the bad value and what would be valid.
"""

from __future__ import annotations

import copy
import difflib
import math
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Union

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    Glob,
    IntervalSweep,
    OverrideType,
    RangeSweep,
    Sweep,
)
from hydra.errors import HydraException
from omegaconf import AnyNode, DictConfig, FloatNode, OmegaConf, read_write
from omegaconf.errors import OmegaConfBaseException
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

KNOWN_TAGS = frozenset({"log"})
# top-level keys of the study runner's own settings: not training hyperparameters
RESERVED_ROOTS = ("study", "sweep", "mode", "plan", "verbose", "hydra")
_MISSING = object()


class SearchSpaceError(ValueError):
    """A sweep param that cannot be searched; the message names the key, the value and what is valid."""


@dataclass(frozen=True)
class SearchSpace:
    distributions: dict[str, BaseDistribution]  # key as written -> distribution
    groups: frozenset[str]  # keys that are config groups (model, schedule, ...)
    intervals: frozenset[str] = frozenset()  # keys written as interval(): continuous, even with int bounds
    # key -> (param, value): the key is searched only in trials where that param takes that value
    conditions: Mapping[str, tuple[str, Any]] = field(default_factory=dict)

    def applies(self, key: str, values: Mapping[str, Any]) -> bool:
        """Whether `key` is searched at the point `values` (its condition, if any, holds there)."""
        condition = self.conditions.get(key)
        return condition is None or (condition[0] in values and values[condition[0]] == condition[1])

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """Suggests every param that applies (fixed ones too, so a trial's params are its whole
        search point); a conditional param after the one it depends on."""
        values: dict[str, Any] = {}
        for key, dist in self.distributions.items():
            if not self.applies(key, values):
                continue
            if isinstance(dist, FloatDistribution):
                values[key] = trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)
            elif isinstance(dist, IntDistribution):
                values[key] = trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
            elif isinstance(dist, CategoricalDistribution):
                values[key] = trial.suggest_categorical(key, dist.choices)
            else:  # pragma: no cover - parse_search_space builds only the three above
                raise TypeError(f"{key}: unsupported distribution {dist!r}")
        return values

    def to_overrides(self, values: Mapping[str, Any]) -> list[str]:
        """Hydra overrides for `values` ("model=mini", "schedule.lr=0.00123"); group choices first.

        Floats are written with repr, so they parse back to the very same float.
        """
        keys = sorted(values, key=lambda k: k not in self.groups)  # stable: groups first
        return [f"{key}={format_value(values[key])}" for key in keys]

    def baseline_values(self, cfg: DictConfig, group_choices: Mapping[str, str]) -> Optional[dict[str, Any]]:
        """The config's current value of every param (a group's from `group_choices`, e.g. Hydra's
        runtime.choices), the values of the baseline trial; None when some current value is not a
        point of the search space (not one of a choice's values, outside a range or interval, off
        a range's step, or null for a numeric param): then there is no baseline trial."""
        values: dict[str, Any] = {}
        for key, dist in self.distributions.items():
            if not self.applies(key, values):
                continue
            if key in self.groups:
                current = group_choices.get(key, _MISSING)
            else:
                current = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
            if current is _MISSING or OmegaConf.is_config(current):
                return None
            point = _as_point(current, dist)
            if point is _MISSING:
                return None
            values[key] = point
        return values


def parse_search_space(params: Optional[Mapping[str, Any]], cfg: DictConfig, config_dir: Path,
                       when: Optional[Mapping[str, Any]] = None) -> SearchSpace:
    """Parses and checks a sweep's `params:` (and `when:`, its conditional params) against the
    composed config `cfg` and the config groups in `config_dir` (the repo's `conf/`: a group's
    options are `conf/<group>/*.yaml`)."""
    config_dir = Path(config_dir)
    parser = _parser()
    distributions: dict[str, BaseDistribution] = {}
    groups: set[str] = set()
    intervals: set[str] = set()
    conditions: dict[str, tuple[str, Any]] = {}

    def add(key: str, raw_text: Any) -> None:
        text = _as_text(raw_text)
        is_group = _check_key(key, cfg, config_dir)
        value = _parse(parser, key, text)
        dist = _distribution(key, text, value, is_group)
        if isinstance(dist, IntDistribution) and isinstance(value, IntervalSweep) and _is_float_field(key, cfg):
            # interval(0, 1) for a float field (weight decay) stays continuous
            dist = FloatDistribution(float(dist.low), float(dist.high), log=dist.log)
        if is_group:
            _check_group_options(key, text, dist, config_dir)
            groups.add(key)
        else:
            _check_field_type(key, text, dist, cfg)
        if isinstance(value, IntervalSweep):
            intervals.add(key)
        distributions[key] = dist

    for raw_key, raw_text in (params or {}).items():
        add(str(raw_key), raw_text)
    for raw_condition, branch in (when or {}).items():
        condition = _condition(str(raw_condition), distributions)
        for raw_key, raw_text in (branch or {}).items():
            key = str(raw_key)
            if key in distributions:
                where = "under another condition" if key in conditions else "in sweep.params"
                raise SearchSpaceError(f"sweep.when {raw_condition!r}: {key!r} is already searched {where}; "
                                       f"a param is searched in one place")
            add(key, raw_text)
            conditions[key] = condition
    return SearchSpace(distributions=distributions, groups=frozenset(groups), intervals=frozenset(intervals),
                       conditions=conditions)


def _condition(text: str, distributions: Mapping[str, BaseDistribution]) -> tuple[str, Any]:
    """`param=value` of a sweep's `when:` -> (param, the choice it names)."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    dist = distributions.get(key)
    if not sep or not isinstance(dist, CategoricalDistribution) or dist.single():
        choices = [k for k, d in distributions.items() if isinstance(d, CategoricalDistribution) and not d.single()]
        raise SearchSpaceError(f"sweep.when {text!r} is invalid: a condition is PARAM=VALUE, PARAM a choice() of "
                               f"sweep.params (here: {', '.join(choices) or 'none'})")
    for choice in dist.choices:
        if value in (str(choice), format_value(choice)):
            return key, choice
    raise SearchSpaceError(f"sweep.when {text!r}: {value!r} is not one of {key}'s choices "
                           f"({', '.join(map(format_value, dist.choices))})")


# ----------------------------------------------------------------------------- parsing

def _interval(start: Union[int, float], end: Union[int, float]) -> IntervalSweep:
    """Hydra's interval(), except that two int bounds stay ints (-> IntDistribution)."""
    if isinstance(start, int) and isinstance(end, int):
        return IntervalSweep(start=start, end=end)
    return IntervalSweep(start=float(start), end=float(end))


def _parser() -> OverridesParser:
    parser = OverridesParser.create()
    # same signature as hydra's own interval(), so the registered definition still applies
    parser.functions.functions["interval"] = _interval
    return parser


def _as_text(raw: Any) -> str:
    if isinstance(raw, str):
        return raw
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, float):
        return repr(raw)
    return str(raw)


def _parse(parser: OverridesParser, key: str, text: str) -> Any:
    try:
        override = parser.parse_overrides([f"{key}={text}"])[0]
    except HydraException as e:
        raise SearchSpaceError(f"sweep param {key!r}: cannot parse {text!r}:\n{e}") from None
    if (override.type != OverrideType.CHANGE or override.package is not None
            or override.key_or_group != key):
        raise SearchSpaceError(
            f"sweep param {key!r}: not a plain config key; write a config path such as "
            f"'schedule.lr' or a group name such as 'model' (no +, ~, @ or =)")
    return override.value()


def _check_tags(key: str, text: str, sweep: Sweep) -> bool:
    unknown = set(sweep.tags) - KNOWN_TAGS
    if unknown:
        raise SearchSpaceError(
            f"sweep param {key!r}: unknown tag {', '.join(sorted(unknown))} in {text!r}; "
            f"the only known tag is 'log' (tag(log, interval(a, b)) or tag(log, range(a, b)))")
    return "log" in sweep.tags


def _distribution(key: str, text: str, value: Any, is_group: bool) -> BaseDistribution:
    if isinstance(value, Glob):
        raise SearchSpaceError(
            f"sweep param {key!r}: glob() in {text!r} is not supported; list the options with choice(a, b, ...)")
    if isinstance(value, ChoiceSweep):
        return _choice(key, text, value)
    if isinstance(value, RangeSweep):
        if is_group:
            raise SearchSpaceError(f"sweep param {key!r}: {text!r} is a range, but {key} is a config group; "
                                   f"use choice(option, ...) of its options")
        return _range(key, text, value)
    if isinstance(value, IntervalSweep):
        if is_group:
            raise SearchSpaceError(f"sweep param {key!r}: {text!r} is an interval, but {key} is a config "
                                   f"group; use choice(option, ...) of its options")
        return _interval_distribution(key, text, value)
    if isinstance(value, Sweep):  # pragma: no cover - a future hydra sweep kind
        raise SearchSpaceError(f"sweep param {key!r}: {text!r} is not supported; use choice(), range() or interval()")
    _check_element(key, text, value)
    return CategoricalDistribution([value])


def _check_element(key: str, text: str, value: Any) -> None:
    if value is not None and not isinstance(value, (bool, int, float, str)):
        raise SearchSpaceError(
            f"sweep param {key!r}: {text!r} holds {value!r}, a {type(value).__name__}; a value must be a "
            f"number, a string, true/false or null")


def _choice(key: str, text: str, value: ChoiceSweep) -> CategoricalDistribution:
    if _check_tags(key, text, value):
        raise SearchSpaceError(f"sweep param {key!r}: tag 'log' in {text!r} applies only to range() or "
                               f"interval(), not to choice()")
    if value.shuffle:
        raise SearchSpaceError(f"sweep param {key!r}: shuffle() in {text!r} is not supported (the sampler "
                               f"picks the order); write choice(a, b, ...)")
    choices = list(value.list)
    if not choices:
        raise SearchSpaceError(f"sweep param {key!r}: {text!r} holds no value")
    for c in choices:
        _check_element(key, text, c)
    for i, a in enumerate(choices):
        for b in choices[:i]:
            if a == b:
                raise SearchSpaceError(f"sweep param {key!r}: {text!r} lists {b!r} and {a!r}, which are equal; "
                                       f"list each value once")
    return CategoricalDistribution(choices)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _range(key: str, text: str, value: RangeSweep) -> BaseDistribution:
    log = _check_tags(key, text, value)
    if value.shuffle:
        raise SearchSpaceError(f"sweep param {key!r}: shuffle() in {text!r} is not supported (the sampler "
                               f"picks the order); write range(start, stop, step)")
    start, stop, step = value.start, value.stop, value.step
    for x in (start, stop, step):
        if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x):
            raise SearchSpaceError(f"sweep param {key!r}: {text!r}: range() needs finite numbers, got {x!r}")
    if step == 0:
        raise SearchSpaceError(f"sweep param {key!r}: {text!r} has step 0; use a positive step")
    if _is_int(start) and _is_int(stop) and _is_int(step):
        values = list(range(start, stop, step))
        if not values:
            raise SearchSpaceError(
                f"sweep param {key!r}: {text!r} is an empty range (stop is excluded, as in Python's range): "
                f"use range(start, stop) with start < stop for a positive step")
        low, high, step = min(values), max(values), abs(step)
        if log:
            if step != 1:
                raise SearchSpaceError(
                    f"sweep param {key!r}: tag(log, ...) with {text!r}: a log-scale range must have step 1; "
                    f"use tag(log, range(a, b)) or tag(log, interval(a, b))")
            if low <= 0:
                raise SearchSpaceError(
                    f"sweep param {key!r}: tag(log, ...) with {text!r}: a log scale needs values > 0, "
                    f"but the range starts at {low}")
            return IntDistribution(low, high, log=True)
        return IntDistribution(low, high, step=step)

    if log:
        raise SearchSpaceError(
            f"sweep param {key!r}: tag(log, ...) with the float range {text!r}: a log scale cannot have a "
            f"step; use tag(log, interval(a, b)) for floats")
    d_start, d_stop, d_step = (Decimal(repr(float(x))) for x in (start, stop, step))
    n = math.ceil((d_stop - d_start) / d_step)
    if n <= 0:
        raise SearchSpaceError(
            f"sweep param {key!r}: {text!r} is an empty range (stop is excluded, as in Python's range): "
            f"use range(start, stop, step) with start < stop for a positive step")
    first, last = float(d_start), float(d_start + (n - 1) * d_step)
    low, high = min(first, last), max(first, last)
    return FloatDistribution(low, high, step=float(abs(d_step)))


def _interval_distribution(key: str, text: str, value: IntervalSweep) -> BaseDistribution:
    log = _check_tags(key, text, value)
    low, high = value.start, value.end
    assert low is not None and high is not None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise SearchSpaceError(f"sweep param {key!r}: {text!r}: interval() needs finite bounds")
    if low > high:
        raise SearchSpaceError(f"sweep param {key!r}: {text!r} has low {low} > high {high}; "
                               f"write interval(low, high) with low <= high")
    if log and low <= 0:
        raise SearchSpaceError(f"sweep param {key!r}: {text!r}: a log scale needs low > 0, got {low}; "
                               f"drop tag(log, ...) or raise the lower bound")
    if _is_int(low) and _is_int(high):
        return IntDistribution(low, high, log=log)
    return FloatDistribution(float(low), float(high), log=log)


# ----------------------------------------------------------------------------- checks against the config

def _group_options(group: str, config_dir: Path) -> list[str]:
    return sorted({p.stem for p in (config_dir / group).iterdir() if p.suffix in (".yaml", ".yml")})


def _config_paths(node: Any, prefix: str = "") -> Iterable[str]:
    if isinstance(node, dict):
        for k, v in node.items():
            path = f"{prefix}{k}"
            yield path
            yield from _config_paths(v, path + ".")


def _has_child(node: DictConfig, part: str) -> bool:
    try:
        return part in node.keys() or part in node
    except OmegaConfBaseException:
        return False


def _check_key(key: str, cfg: DictConfig, config_dir: Path) -> bool:
    """True when `key` is a config group; raises unless it is a group or a path in `cfg`."""
    root = key.split(".", 1)[0]
    if root in RESERVED_ROOTS:
        raise SearchSpaceError(f"sweep param {key!r}: '{root}' holds the study runner's own settings, "
                               f"not a training hyperparameter; sweep model/schedule/optim/... keys")
    if key and "." not in key and (config_dir / key).is_dir():
        return True
    node: Any = cfg
    parts = key.split(".")
    for i, part in enumerate(parts):
        if not isinstance(node, DictConfig) or not part or not _has_child(node, part):
            raise SearchSpaceError(_unknown_key_message(key, cfg, config_dir))
        if i < len(parts) - 1:
            node = node._get_node(part)  # the node itself: no interpolation resolved
    return False


def _unknown_key_message(key: str, cfg: DictConfig, config_dir: Path) -> str:
    container = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
    paths = [p for p in _config_paths(container) if p.split(".", 1)[0] not in RESERVED_ROOTS]
    groups = sorted(p.name for p in config_dir.iterdir() if p.is_dir() and p.name not in RESERVED_ROOTS) \
        if config_dir.is_dir() else []
    close = difflib.get_close_matches(key, sorted(set(paths) | set(groups)), n=5, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (f"sweep param {key!r}: unknown config key: it is neither a path in the config nor a config "
            f"group (groups: {', '.join(groups) or 'none'}){hint}")


def _is_float_field(key: str, cfg: DictConfig) -> bool:
    """Whether the config field at `key` is typed float (or, untyped, holds a float now)."""
    parent_key, _, leaf = key.rpartition(".")
    parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
    node = parent._get_node(leaf) if isinstance(parent, DictConfig) else None
    if isinstance(node, FloatNode):
        return True
    return isinstance(node, AnyNode) and isinstance(node._value(), float)


def _check_group_options(key: str, text: str, dist: BaseDistribution, config_dir: Path) -> None:
    assert isinstance(dist, CategoricalDistribution)
    options = _group_options(key, config_dir)
    for choice in dist.choices:
        if not isinstance(choice, str) or choice not in options:
            raise SearchSpaceError(
                f"sweep param {key!r}: unknown {key} option {choice!r} in {text!r}; "
                f"valid: {', '.join(options) or 'none'} (conf/{key}/*.yaml)")


def _candidate_values(dist: BaseDistribution) -> list[Any]:
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    assert isinstance(dist, (IntDistribution, FloatDistribution))
    return [dist.low, dist.high]


def _check_field_type(key: str, text: str, dist: BaseDistribution, cfg: DictConfig) -> None:
    """Each value must be assignable to the config field (int fields take ints, ...), as Hydra's
    override would assign it: found now rather than when a trial composes its config."""
    probe = copy.deepcopy(cfg)
    for value in _candidate_values(dist):
        try:
            with read_write(probe):
                OmegaConf.update(probe, key, value, merge=False)
        except OmegaConfBaseException as e:
            reason = str(e).splitlines()[0]
            hint = " (an int field needs int values: int bounds or an int range)" \
                if isinstance(value, float) and "Integer" in reason else ""
            raise SearchSpaceError(f"sweep param {key!r}: value {value!r} of {text!r} does not fit the "
                                   f"config field: {reason}{hint}") from None


# ----------------------------------------------------------------------------- values

def _as_point(value: Any, dist: BaseDistribution) -> Any:
    """`value` as a point of `dist`, or _MISSING when it is not one."""
    if isinstance(dist, CategoricalDistribution):
        for choice in dist.choices:
            if (choice is None) != (value is None) or isinstance(choice, bool) != isinstance(value, bool):
                continue
            if isinstance(choice, str) != isinstance(value, str):
                continue
            if choice == value:
                return choice
        return _MISSING
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return _MISSING
    if isinstance(value, float) and not math.isfinite(value):
        return _MISSING
    if not dist.low <= value <= dist.high:
        return _MISSING
    if isinstance(dist, IntDistribution):
        if float(value) != int(value) or (int(value) - dist.low) % dist.step:
            return _MISSING
        return int(value)
    assert isinstance(dist, FloatDistribution)
    if dist.step is not None:
        k = (Decimal(repr(float(value))) - Decimal(repr(dist.low))) / Decimal(repr(dist.step))
        if abs(k - round(k)) > Decimal("1e-8"):
            return _MISSING
    return float(value)


def format_value(value: Any) -> str:
    """A value as Hydra override text that parses back to the same value (floats via repr)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, str):
        parser = OverridesParser.create()
        escaped_single = value.replace("\\", "\\\\").replace("'", "\\'")
        escaped_double = value.replace("\\", "\\\\").replace('"', '\\"')
        for candidate in (value, f"'{escaped_single}'", f'"{escaped_double}"', f"'{value}'"):
            try:
                parsed = parser.parse_overrides([f"k={candidate}"])[0].value()
            except HydraException:
                continue
            if isinstance(parsed, str) and parsed == value:
                return candidate
        raise ValueError(f"cannot write {value!r} as a Hydra override value")
    if hasattr(value, "item"):  # a numpy scalar
        return format_value(value.item())
    raise ValueError(f"cannot write {value!r} ({type(value).__name__}) as a Hydra override value")


def _values_to_check(dist: BaseDistribution) -> list[Any]:
    """The values whose field checks decide a param: a range's ends, every choice."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    return [dist.low, dist.high]


def check_values_allowed(space: SearchSpace, cfg: DictConfig) -> None:
    """SearchSpaceError when a param's range or choices reach a value its own field rejects
    (`model.dropout: interval(0.5, 1.5)`), checked with the trainer's checks on the study's config
    before any trial runs. A value rejected only in combination with another setting (n_head that
    does not divide this n_embd) is left to the trial, which fails with the reason: another
    searched param may make it valid."""
    from trainer import ConfigError, as_train_config, check_config

    base = OmegaConf.to_container(cfg, resolve=True)
    written = cfg.sweep.params if cfg.get("sweep") is not None else {}
    for key, dist in space.distributions.items():
        if key in space.groups:
            continue
        for value in _values_to_check(dist):
            trial_cfg = OmegaConf.create(copy.deepcopy(base))
            OmegaConf.update(trial_cfg, key, value, merge=False)
            try:
                check_config(as_train_config(trial_cfg))
            except ConfigError as e:
                if e.key == key:
                    raise SearchSpaceError(
                        f"sweep param {key!r}: {written.get(key, dist)} includes {format_value(value)}, "
                        f"but {e}; narrow it to values the field accepts") from None
