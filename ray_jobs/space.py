"""The space file of a search: its base config with overrides, the search space over dotted
keys (`loguniform(a, b)`, `uniform`, `randint`, `choice([..])`, `grid([..])`), the scheduler,
num_samples, the evaluation interval, resources per trial, restarts and the storage path, read
and checked in full before anything runs (tune_driver.py runs it).
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gantune.errors import GantuneError
from ray_jobs import config as config_lib
from ray_jobs.config import Config
from ray_jobs.segment import PLACEMENTS, TrialResources

_DOMAIN = re.compile(r"^\s*(\w+)\s*\((.*)\)\s*$")
_SCHEDULERS = ("pbt", "asha", "none")


@dataclass(frozen=True)
class SearchSpec:
    path: Path
    name: str
    base: Config
    space: dict[str, Any]  # dotted key -> tune domain
    space_text: dict[str, str]
    scheduler: str = "pbt"
    perturbation_interval: int = 1  # in evaluations (= reports)
    quantile_fraction: float = 0.25
    resample_probability: float = 0.25
    synch: bool = False  # PBT decides when every trial has reached the interval (Tune's synch)
    num_samples: int = 4
    max_concurrent: int = 0  # 0: as many as resources allow
    # Restarts of a failed trial (a killed process, a lost node) from its last checkpoint.
    max_failures: int = 1
    # Each trial's checkpoints kept on disk: its last keep_last and best keep_best (by the
    # objective), besides those a trial may still restore from (retention.py). None: all.
    keep_last: int | None = 2
    keep_best: int = 1
    resources: TrialResources = field(default_factory=TrialResources)
    storage_path: Path = Path("runs")

    @property
    def experiment_dir(self) -> Path:
        return self.storage_path / self.name

    @property
    def objective(self) -> str:
        return self.base.eval.objective_key

    @property
    def mode(self) -> str:
        return self.base.eval.objective_mode


def parse_domain(where: str, text: Any) -> Any:
    """`loguniform(0.1, 20)`, `uniform(a, b)`, `randint(a, b)`, `choice([..])`, `grid([..])`."""
    from ray import tune

    if not isinstance(text, str):
        raise GantuneError(f"{where}: expected a domain like loguniform(0.1, 20), got {text!r}")
    m = _DOMAIN.match(text)
    if not m:
        raise GantuneError(f"{where}: cannot parse {text!r}; expected e.g. loguniform(0.1, 20)")
    name, args_text = m.groups()
    try:
        args = ast.literal_eval(f"[{args_text}]")  # unlike YAML 1.1, reads 1e-5 as a number
    except (ValueError, SyntaxError):
        raise GantuneError(f"{where}: cannot parse the arguments of {text!r}") from None
    numeric = all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
    if name in ("loguniform", "uniform", "randint") and (len(args) != 2 or not numeric or not args[0] < args[1]):
        raise GantuneError(f"{where}: {name} takes two numbers low < high, got {text!r}")
    if name == "loguniform":
        if args[0] <= 0:
            raise GantuneError(f"{where}: loguniform needs low > 0, got {text!r}")
        return tune.loguniform(*args)
    if name == "uniform":
        return tune.uniform(*args)
    if name == "randint":
        return tune.randint(*args)
    if name in ("choice", "grid"):
        if len(args) != 1 or not isinstance(args[0], list) or not args[0]:
            raise GantuneError(f"{where}: {name} takes one non-empty list, got {text!r}")
        return tune.choice(args[0]) if name == "choice" else tune.grid_search(args[0])
    raise GantuneError(f"{where}: unknown domain {name!r}; expected loguniform, uniform, randint, choice or grid")


_SPEC_KEYS = {"name", "base", "overrides", "space", "scheduler", "num_samples", "max_concurrent", "max_failures",
              "resources", "storage_path", "eval_every", "checkpoints"}
_SCHED_KEYS = {"name", "perturbation_interval", "quantile_fraction", "resample_probability", "synch"}


def _check_pbt_space(path: Path, base: Config, space: dict[str, Any]) -> None:
    """What PBT can perturb: numeric ranges and lists of values, in keys a checkpoint can cross."""
    if not space:
        raise GantuneError(f"{path}: pbt needs a non-empty space to perturb")
    shaped = set(config_lib.shape_keys(config_lib.to_flat(base)))
    for key, domain in space.items():
        if isinstance(domain, dict) and "grid_search" in domain:
            raise GantuneError(f"{path}: space.{key}: grid is for scheduler none (every value once); PBT perturbs "
                               f"sampled values: use choice([...])")
        if key in shaped:
            raise GantuneError(f"{path}: space.{key} shapes the nets, so PBT cannot copy weights across its values; "
                               f"search it with scheduler none or asha")


def load_spec(path: str | os.PathLike[str]) -> SearchSpec:
    path = Path(path)
    raw = config_lib.read_yaml(path)
    if not isinstance(raw, dict):
        raise GantuneError(f"{path}: expected a mapping with base, space, scheduler, ...")
    for key in raw:
        if key not in _SPEC_KEYS:
            raise GantuneError(f"{path}: unknown key {key!r}" + config_lib._suggest(str(key), sorted(_SPEC_KEYS)))
    if "base" not in raw:
        raise GantuneError(f"{path}: missing 'base' (the base training config, relative to this file)")
    base_path = (path.parent / str(raw["base"])).resolve()
    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise GantuneError(f"{path}: overrides must map dotted keys to values")
    if "eval_every" in raw:  # steps between evaluations = checkpoints = PBT reports
        overrides = {**overrides, "eval.every": raw["eval_every"]}
    base = config_lib.load(base_path, overrides)
    flat = config_lib.to_flat(base)
    space_raw = raw.get("space") or {}
    if not isinstance(space_raw, dict):
        raise GantuneError(f"{path}: space must map dotted keys to domains")
    space = {}
    for key, text in space_raw.items():
        if key not in flat:
            raise GantuneError(f"{path}: space key {key!r} is not a config key" + config_lib._suggest(str(key), list(flat)))
        reason = config_lib.no_effect(base, key)
        if reason is not None:
            raise GantuneError(f"{path}: space key {key!r} has no effect: {reason}")
        space[key] = parse_domain(f"{path}: space.{key}", text)
    sched = raw.get("scheduler") or {"name": "none"}
    if isinstance(sched, str):
        sched = {"name": sched}
    for key in sched:
        if key in ("metric", "mode"):  # Tune's own names: here the base config says what a search optimises
            raise GantuneError(f"{path}: scheduler.{key} is not set here: every scheduler optimises the base config's "
                               f"eval.objective (and eval.mode), got {key}={sched[key]!r}")
        if key not in _SCHED_KEYS:
            raise GantuneError(f"{path}: unknown scheduler key {key!r}" + config_lib._suggest(str(key), sorted(_SCHED_KEYS)))
    if sched.get("name", "none") not in _SCHEDULERS:
        raise GantuneError(f"{path}: scheduler.name must be one of {list(_SCHEDULERS)}, got {sched.get('name')!r}")
    if sched.get("name") == "pbt":
        _check_pbt_space(path, base, space)
    synch = sched.get("synch", False)
    if not isinstance(synch, bool):
        raise GantuneError(f"{path}: scheduler.synch must be true or false, got {synch!r}")
    if synch and sched.get("name") != "pbt":
        raise GantuneError(f"{path}: scheduler.synch applies to pbt only (scheduler.name is {sched.get('name')!r})")
    resources = parse_resources(path, raw.get("resources") or {})
    num_samples = raw.get("num_samples", 4)
    if not isinstance(num_samples, int) or num_samples < 1:
        raise GantuneError(f"{path}: num_samples must be a positive integer, got {num_samples!r}")
    storage = Path(str(raw.get("storage_path", "runs"))).expanduser()
    keep = raw.get("checkpoints", {})
    if keep != "all" and not (isinstance(keep, dict) and set(keep) <= {"keep_last", "keep_best"}):
        raise GantuneError(f"{path}: checkpoints must be 'all' or a mapping with keep_last (>= 1) and keep_best (>= 0),"
                           f" got {keep!r}")

    def number(where: str, value: Any, cast: type, low: float, high: float = float("inf")) -> Any:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and low <= value <= high
        if not ok or (cast is int and value != int(value)):
            kind = "an integer" if cast is int else "a number"
            raise GantuneError(f"{path}: {where} must be {kind} in [{low}, {high}], got {value!r}")
        return cast(value)

    return SearchSpec(
        path=path,
        name=str(raw.get("name", path.stem)),
        base=base,
        space=space,
        space_text={k: str(v) for k, v in space_raw.items()},
        scheduler=sched.get("name", "none"),
        perturbation_interval=number("scheduler.perturbation_interval", sched.get("perturbation_interval", 1), int, 1),
        quantile_fraction=number("scheduler.quantile_fraction", sched.get("quantile_fraction", 0.25), float, 0, 0.5),
        resample_probability=number("scheduler.resample_probability", sched.get("resample_probability", 0.25), float, 0, 1),
        synch=synch,
        num_samples=num_samples,
        max_concurrent=number("max_concurrent", raw.get("max_concurrent", 0), int, 0),
        max_failures=number("max_failures", raw.get("max_failures", 1), int, 0),
        keep_last=None if keep == "all" else number("checkpoints.keep_last", keep.get("keep_last", 2), int, 1),
        keep_best=0 if keep == "all" else number("checkpoints.keep_best", keep.get("keep_best", 1), int, 0),
        resources=resources,
        storage_path=storage.resolve(),
    )


def parse_resources(where: Any, raw: Any, base: TrialResources = TrialResources()) -> TrialResources:
    """The `resources` mapping of a space file (or `gantune slurm`'s overrides) over `base`."""
    if not isinstance(raw, dict):
        raise GantuneError(f"{where}: resources must map workers_per_trial, cpus_per_worker, gpus_per_worker, placement")
    known = [f.name for f in dataclasses.fields(TrialResources)]
    values = dataclasses.asdict(base)
    for key, value in raw.items():
        if key not in known:
            raise GantuneError(f"{where}: unknown key resources.{key}" + config_lib._suggest(str(key), known))
        if key == "placement":
            if value not in PLACEMENTS:
                raise GantuneError(f"{where}: resources.placement must be one of {list(PLACEMENTS)}, got {value!r}")
        elif key == "workers_per_trial":
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise GantuneError(f"{where}: resources.workers_per_trial must be an integer >= 1, got {value!r}")
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
            raise GantuneError(f"{where}: resources.{key} must be a number >= 0, got {value!r}")
        values[key] = value if key in ("placement", "workers_per_trial") else float(value)
    res = TrialResources(**values)
    if res.workers_per_trial > 1 and res.cpus_per_worker <= 0 and res.gpus_per_worker <= 0:
        raise GantuneError(f"{where}: a multi-worker trial needs cpus_per_worker or gpus_per_worker > 0")
    return res
