"""Memory per worker of a 2-worker SPADE at the reference width under ZeRO 0, 1 and 2, on CPU.

    .venv/bin/python benchmarks/zero_memory.py [--ngf 64] [--classes 151] [--size 64] [--workers 2]

For each stage, one Ray Train run of N workers builds the gantune Trainer (two DeepSpeed engines,
G and D) at ngf 64 with 151 label classes (SPADE's ADE20K width), takes one step (Adam allocates
its state on the first step), and every rank measures the bytes of its optimizer state (Adam's
moments and ZeRO's fp32 partitions, all tensors in the engines' optimizer state_dicts) and its
peak resident memory. Printed side by side with the ratio against ZeRO 0: ZeRO-1 partitions
Adam's moments by rank, so they shrink about N-fold, but it adds a flat fp32 master partition
of the weights (1/N of them); ZeRO-2 also partitions gradients.
The image size changes only activations, so a small one keeps the run short.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout


def _tensor_bytes(x: Any, under: str = "") -> dict[str, int]:
    """Bytes of the tensors in an optimizer state_dict: Adam's moments, and the rest (ZeRO's
    flat fp32 master partitions)."""
    import torch

    out = {"moments": 0, "other": 0}
    if isinstance(x, torch.Tensor):
        out["moments" if under in ("exp_avg", "exp_avg_sq") else "other"] += x.numel() * x.element_size()
    elif isinstance(x, (dict, list, tuple)):
        items = x.items() if isinstance(x, dict) else ((under, v) for v in x)
        for key, value in items:
            for k, n in _tensor_bytes(value, str(key) if isinstance(x, dict) else under).items():
                out[k] += n
    return out


def worker(loop_config: dict[str, Any]) -> None:
    import resource

    import ray.train

    from ray_jobs import config as config_lib
    from ray_jobs import distributed as ddp
    from ray_jobs.trainer import Trainer

    cfg = config_lib.from_dict(loop_config["config"], "benchmark config")
    tr = Trainer(cfg, Path(loop_config["run_dir"]) / f"rank{ray.train.get_context().get_world_rank()}")
    tr.train(1)
    g, d = (_tensor_bytes(tr.engines[n].optimizer.state_dict()) for n in ("G", "D"))
    mine = {
        "moments_mb": (g["moments"] + d["moments"]) / 2**20,
        "fp32_partition_mb": (g["other"] + d["other"]) / 2**20,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params_mb": sum(p.numel() * p.element_size() for e in tr.engines.values() for p in e.module.parameters()) / 2**20,
    }
    ranks = ddp.all_gather_object(mine)
    if tr.rank == 0:  # Train V2 keeps metrics only with checkpoints: a file says it plainly
        (Path(loop_config["run_dir"]) / "ranks.json").write_text(json.dumps(ranks))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ngf", type=int, default=64)
    parser.add_argument("--classes", type=int, default=151)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from ray_jobs import config as config_lib

    ray.init(num_cpus=args.workers, include_dashboard=False, configure_logging=False, log_to_driver=False,
             _node_ip_address="127.0.0.1")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for stage in (0, 1, 2):
            cfg = config_lib.with_values(config_lib.Config(), {
                "model.ngf": args.ngf, "model.ndf": 64, "data.num_classes": args.classes,
                "data.size_px": args.size, "data.n_train": 2 * args.workers, "data.flip": False,
                "optim.batch_size": args.workers, "optim.zero_stage": stage,
                "spade.lambda_vgg": 0.0, "train.log_every": 1000, "train.image_every": 1000,
            })
            TorchTrainer(
                worker,
                train_loop_config={"config": config_lib.to_dict(cfg), "run_dir": f"{tmp}/zero{stage}"},
                scaling_config=ScalingConfig(num_workers=args.workers),
                run_config=RunConfig(name=f"zero{stage}", storage_path=tmp),
            ).fit()
            rows[stage] = json.loads(Path(f"{tmp}/zero{stage}/ranks.json").read_text())
    ray.shutdown()

    for ranks in rows.values():
        for r in ranks:
            r["optimizer_mb"] = r["moments_mb"] + r["fp32_partition_mb"]
    base_opt = sum(r["optimizer_mb"] for r in rows[0]) / len(rows[0])
    base_mom = sum(r["moments_mb"] for r in rows[0]) / len(rows[0])
    base_rss = sum(r["peak_rss_mb"] for r in rows[0]) / len(rows[0])
    print(f"\nSPADE ngf {args.ngf}, {args.classes} classes, {args.workers} workers on CPU; "
          f"G+D parameters {rows[0][0]['params_mb']:.0f} MB per worker")
    print(f"{'ZeRO':>4} {'rank':>4} {'Adam_moments_MB':>15} {'vs ZeRO-0':>9} {'fp32_part_MB':>12}"
          f" {'optimizer_MB':>12} {'vs ZeRO-0':>9} {'peak_RSS_MB':>11} {'vs ZeRO-0':>9}")
    for stage, ranks in rows.items():
        for rank, r in enumerate(ranks):
            print(f"{stage:>4} {rank:>4} {r['moments_mb']:>15.0f} {r['moments_mb'] / base_mom:>9.2f}"
                  f" {r['fp32_partition_mb']:>12.0f} {r['optimizer_mb']:>12.0f} {r['optimizer_mb'] / base_opt:>9.2f}"
                  f" {r['peak_rss_mb']:>11.0f} {r['peak_rss_mb'] / base_rss:>9.2f}")


if __name__ == "__main__":
    main()
