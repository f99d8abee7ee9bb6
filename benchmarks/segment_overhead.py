"""How much of a multi-worker trial's time goes to anything but training: segment overhead.

    .venv/bin/python benchmarks/segment_overhead.py [--config tune_spaces/base/spade_demo.yaml]
        [--steps 4 16] [--workers 1 2] [--set model.ngf=8 ...]

Each PBT interval of a multi-worker trial is one Ray Train segment (ray_jobs/segment.py): worker
start-up, process group, two DeepSpeed engines, checkpoint load, the training steps, the
evaluation, the checkpoint save, and Train's copy of it. Evaluation happens at every report on
either path, so the overhead is the segment's wall time less its training steps and its
evaluation. For each worker count and segment length, one segment from scratch and one resumed
from its checkpoint run side by side on one local Ray cluster; the table gives each part, and
the segment length at which the overhead of a resumed segment falls below 5% (a fixed cost F
and a per-step cost s: F / (F + k s) < 0.05 from k > 19 F / s).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from ray_jobs import config as config_lib  # noqa: E402
from ray_jobs.segment import TrialResources, run_segment  # noqa: E402

PARTS = ("init_s", "load_s", "train_s", "eval_s", "save_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("tune_spaces/base/spade_demo.yaml"))
    parser.add_argument("--steps", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()

    import ray

    ray.init(num_cpus=max(args.workers), include_dashboard=False, configure_logging=False,
             log_to_driver=False, _node_ip_address="127.0.0.1")
    base = config_lib.load(args.config, config_lib.parse_set(args.set))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.workers:
            res = TrialResources(workers_per_trial=workers, cpus_per_worker=1.0)
            for steps in args.steps:
                cfg = config_lib.with_values(base, {"eval.every": steps, "train.steps": 2 * steps})
                trial = Path(tmp) / f"w{workers}-k{steps}"
                first, ckpt = run_segment(config_lib.to_dict(cfg), res, trial, "bench", None)
                again, _ = run_segment(config_lib.to_dict(cfg), res, trial, "bench", ckpt.path)
                for kind, r in (("fresh", first), ("resumed", again)):
                    wall = r["time/segment_s"]
                    overhead = wall - r["time/train_s"] - r["time/eval_s"]
                    rows.append((workers, steps, kind, wall, overhead, *(r[f"time/{p}"] for p in PARTS)))
    ray.shutdown()

    print(f"\n{'workers':>7} {'steps':>5} {'segment':>8} {'wall_s':>7} {'overhead_s':>10} {'overhead':>8}  "
          + " ".join(f"{p:>8}" for p in PARTS) + f" {'other_s':>8}")
    for workers, steps, kind, wall, overhead, *parts in rows:
        other = wall - sum(parts)  # worker start-up, process group, Train's checkpoint copy, teardown
        print(f"{workers:>7} {steps:>5} {kind:>8} {wall:>7.1f} {overhead:>10.1f} {overhead / wall:>8.1%}  "
              + " ".join(f"{p:>8.2f}" for p in parts) + f" {other:>8.1f}")
    print()
    for workers in args.workers:
        resumed = [r for r in rows if r[0] == workers and r[2] == "resumed"]
        fixed = sum(r[4] for r in resumed) / len(resumed)
        per_step = sum(r[7] / r[1] for r in resumed) / len(resumed)  # train_s per step
        k = math.ceil(19 * fixed / per_step)
        print(f"{workers} worker(s): fixed overhead {fixed:.1f} s per segment, {per_step:.2f} s per step; "
              f"overhead < 5% from {k} steps per segment (eval_every)")


if __name__ == "__main__":
    main()
