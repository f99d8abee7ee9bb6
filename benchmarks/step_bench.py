"""A family's training-step throughput: DeepSpeed engines against plain torch optimizers.

    .venv/bin/python benchmarks/step_bench.py [--config tune_spaces/base/spade_demo.yaml]
        [--steps 20] [--rounds 2] [--set optim.zero_stage=1 ...]
    .venv/bin/python benchmarks/step_bench.py --family all   # or --family oasis --family unite

With --family, each family at a fixed tiny config (its smoke widths, 64 px or the smallest it
allows, batch 4): one row of training images/s per family, in its main stage.

Both loops run the family's phases (for SPADE: D on real and detached fake, then G against a
frozen D) and losses on the same pre-rendered batches, alternating A/B rounds in one process so
load on the machine hits both alike. Prints images/s for each and the overhead ratio.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from ray_jobs import config as config_lib  # noqa: E402
from ray_jobs.families import FAMILIES, Family  # noqa: E402
from ray_jobs.families.base import learning_rate  # noqa: E402
from ray_jobs.distributed import init_distributed  # noqa: E402
from ray_jobs.engines import deepspeed_config  # noqa: E402

# A step past every pre-training stage (ESRGAN's PSNR stage, PD-GAN's coarse net), divisible by
# every phase's `every`: the phases the bench times are the family's main training.
MAIN_STAGE = 2**20


def plain_step(family: Family, nets: dict, opts: dict, batch) -> None:  # type: ignore[no-untyped-def,type-arg]
    """The family's phases with plain torch Adam, the way the trainer runs them."""
    for phase in (p for p in family.phases if p.active(MAIN_STAGE)):  # past any pre-training stage
        for name, net in nets.items():
            net.requires_grad_(name == phase.net)
        loss, _ = family.loss(phase.name, nets, batch)
        if loss is None:
            continue
        opts[phase.net].zero_grad(set_to_none=True)
        loss.backward()
        opts[phase.net].step()
    for net in nets.values():
        net.requires_grad_(True)


def engine_step(family: Family, engines: dict, batch) -> None:  # type: ignore[no-untyped-def,type-arg]
    """The same phases through DeepSpeed engines (other nets frozen, through their modules)."""
    modules = {name: engine.module for name, engine in engines.items()}
    for phase in (p for p in family.phases if p.active(MAIN_STAGE)):
        for name, module in modules.items():
            module.requires_grad_(name == phase.net)
        loss, _ = family.loss(phase.name, {**modules, phase.net: engines[phase.net]}, batch)
        if loss is None:
            continue
        engines[phase.net].backward(loss)
        engines[phase.net].step()
    for module in modules.values():
        module.requires_grad_(True)


def bench(cfg: config_lib.Config, steps: int, rounds: int) -> tuple[list[float], list[float]]:
    """images/s of plain torch and of DeepSpeed engines, per round, on the same batches."""
    import deepspeed

    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if torch.cuda.is_available() else torch.device("cpu")
    torch.manual_seed(0)
    family = FAMILIES[cfg.model.family](cfg).to(device)
    train_set, _ = family.datasets()
    b = cfg.optim.batch_size
    batches = []
    for i in range(4):
        items = [train_set[(i * b + j) % len(train_set)] for j in range(b)]  # type: ignore[arg-type]
        batches.append({k: torch.stack([it[k] for it in items]).to(device)
                        for k, v in items[0].items() if isinstance(v, torch.Tensor)})

    fresh = {net.name: family.build(net.name).to(device) for net in family.nets}  # one set of weights
    nets = {name: copy.deepcopy(m) for name, m in fresh.items()}
    betas = (cfg.optim.beta1, cfg.optim.beta2)
    opts = {net.name: torch.optim.Adam(nets[net.name].parameters(), lr=learning_rate(cfg, net), betas=betas)
            for net in family.nets}
    engines = {}
    for net in family.nets:
        model = copy.deepcopy(fresh[net.name])
        engines[net.name], _, _, _ = deepspeed.initialize(
            model=model, model_parameters=model.parameters(),
            config=deepspeed_config(cfg, learning_rate(cfg, net), 1))

    def timed(step_fn) -> float:  # type: ignore[no-untyped-def]
        step_fn(batches[0])  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(steps):
            step_fn(batches[i % len(batches)])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return steps * b / (time.perf_counter() - t0)

    plain, ds = [], []
    for _ in range(rounds):
        plain.append(timed(lambda batch: plain_step(family, nets, opts, batch)))
        ds.append(timed(lambda batch: engine_step(family, engines, batch)))
    return plain, ds


def tiny_config(family: str) -> config_lib.Config:
    """`--family`: the family at its smoke widths, 64 px (or the smallest its smoke config
    allows: PD-GAN's 128), batch 4, random backbones."""
    return config_lib.with_values(config_lib.Config(), {
        "model.family": family, "data.size_px": 64, **FAMILIES[family].smoke_overrides,
        "data.n_train": 16, "optim.batch_size": 4, "loss.random_backbones": True,
    }, f"--family {family}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "tune_spaces/base/spade_demo.yaml")
    parser.add_argument("--family", action="append", default=[], choices=[*FAMILIES, "all"],
                        help="a family at a fixed tiny config (repeatable; all: every family) instead of --config")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()

    init_distributed()
    families = list(FAMILIES) if "all" in args.family else args.family
    if families:
        print(f"{'family':10s} {'plain img/s':>12s} {'DeepSpeed img/s':>16s} {'ratio':>6s}   (64 px, batch 4, smoke widths, "
              f"threads {torch.get_num_threads()})")
        for name in families:
            cfg = config_lib.with_values(tiny_config(name), config_lib.parse_set(args.set))
            plain, ds = bench(cfg, args.steps, args.rounds)
            p, d = statistics.median(plain), statistics.median(ds)
            size = "" if cfg.data.size_px == 64 else f"   ({cfg.data.size_px} px)"
            print(f"{name:10s} {p:12.2f} {d:16.2f} {p / d:6.3f}{size}", flush=True)
        return
    cfg = config_lib.load(args.config, config_lib.parse_set(args.set))
    plain, ds = bench(cfg, args.steps, args.rounds)
    p, d = statistics.median(plain), statistics.median(ds)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"config {args.config.name} {' '.join(args.set)}: {cfg.model.family} {cfg.data.size_px}px ngf {cfg.model.ngf} "
          f"batch {cfg.optim.batch_size} ZeRO {cfg.optim.zero_stage} {cfg.optim.precision} on {device}, "
          f"threads {torch.get_num_threads()}")
    print(f"plain torch : {p:8.2f} img/s  (rounds {', '.join(f'{x:.2f}' for x in plain)})")
    print(f"DeepSpeed   : {d:8.2f} img/s  (rounds {', '.join(f'{x:.2f}' for x in ds)})")
    print(f"overhead ratio (plain / DeepSpeed time per image): {p / d:.3f}")


if __name__ == "__main__":
    main()
