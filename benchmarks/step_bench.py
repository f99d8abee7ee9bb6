"""SPADE G+D training-step throughput: DeepSpeed engines against plain torch optimizers.

    .venv/bin/python benchmarks/step_bench.py [--config tune_spaces/base/spade_demo.yaml]
        [--steps 20] [--rounds 2] [--set optim.zero_stage=1 ...]

Both loops run the same phases (D on real and detached fake, then G against a frozen D, the
family's losses) on the same pre-rendered batches, alternating A/B rounds in one process so
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
from ray_jobs.family_spade import SpadeFamily  # noqa: E402
from ray_jobs.distributed import init_distributed  # noqa: E402
from ray_jobs.trainer import build_datasets, deepspeed_config  # noqa: E402


def plain_step(family: SpadeFamily, G, D, opt_G, opt_D, batch) -> None:  # type: ignore[no-untyped-def]
    loss_D, _ = family.d_loss(G, D, batch)
    opt_D.zero_grad(set_to_none=True)
    loss_D.backward()
    opt_D.step()
    D.requires_grad_(False)
    loss_G, _ = family.g_loss(G, D, batch)
    opt_G.zero_grad(set_to_none=True)
    loss_G.backward()
    opt_G.step()
    D.requires_grad_(True)


def engine_step(family: SpadeFamily, G_engine, D_engine, batch) -> None:  # type: ignore[no-untyped-def]
    loss_D, _ = family.d_loss(G_engine.module, D_engine, batch)
    D_engine.backward(loss_D)
    D_engine.step()
    D_engine.module.requires_grad_(False)
    loss_G, _ = family.g_loss(G_engine, D_engine.module, batch)
    G_engine.backward(loss_G)
    G_engine.step()
    D_engine.module.requires_grad_(True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path(__file__).resolve().parents[1] / "tune_spaces/base/spade_demo.yaml")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per round")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()

    import deepspeed

    cfg = config_lib.load(args.config, config_lib.parse_set(args.set))
    init_distributed()
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if torch.cuda.is_available() else torch.device("cpu")
    torch.manual_seed(0)
    family = SpadeFamily(cfg).to(device)
    train_set, _ = build_datasets(cfg)
    b = cfg.optim.batch_size
    batches = []
    for i in range(4):
        items = [train_set[i * b + j] for j in range(b)]
        batches.append({k: torch.stack([it[k] for it in items]).to(device) for k in ("image", "label")})

    G0, D0 = family.build_G().to(device), family.build_D().to(device)
    G, D = copy.deepcopy(G0), copy.deepcopy(D0)
    betas = (cfg.optim.beta1, cfg.optim.beta2)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.optim.lr_G, betas=betas)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.optim.lr_D, betas=betas)
    G_model = copy.deepcopy(G0)
    D_model = copy.deepcopy(D0)
    G_engine, _, _, _ = deepspeed.initialize(model=G_model, model_parameters=G_model.parameters(),
                                             config=deepspeed_config(cfg, cfg.optim.lr_G, 1))
    D_engine, _, _, _ = deepspeed.initialize(model=D_model, model_parameters=D_model.parameters(),
                                             config=deepspeed_config(cfg, cfg.optim.lr_D, 1))

    def timed(step_fn) -> float:  # type: ignore[no-untyped-def]
        step_fn(batches[0])  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(args.steps):
            step_fn(batches[i % len(batches)])
        if device.type == "cuda":
            torch.cuda.synchronize()
        return args.steps * b / (time.perf_counter() - t0)

    plain, ds = [], []
    for _ in range(args.rounds):
        plain.append(timed(lambda batch: plain_step(family, G, D, opt_G, opt_D, batch)))
        ds.append(timed(lambda batch: engine_step(family, G_engine, D_engine, batch)))
    p, d = statistics.median(plain), statistics.median(ds)
    print(f"config {args.config.name} {' '.join(args.set)}: {cfg.data.size_px}px ngf {cfg.model.ngf} "
          f"batch {b} ZeRO {cfg.optim.zero_stage} {cfg.optim.precision} on {device}, threads {torch.get_num_threads()}")
    print(f"plain torch : {p:8.2f} img/s  (rounds {', '.join(f'{x:.2f}' for x in plain)})")
    print(f"DeepSpeed   : {d:8.2f} img/s  (rounds {', '.join(f'{x:.2f}' for x in ds)})")
    print(f"overhead ratio (plain / DeepSpeed time per image): {p / d:.3f}")


if __name__ == "__main__":
    main()
