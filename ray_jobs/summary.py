"""The end of a search: summary.json in the experiment folder, a table, the best config.

Per trial: sampled config, objective history, best value, steps, exploit lineage (read from the
trial's last checkpoint, where the trainer records every donor it continued from), and the path
of its best checkpoint.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from ray_jobs.trainer import STATE_FILE


def _lineage(checkpoint: Any) -> list[dict[str, Any]]:
    if checkpoint is None:
        return []
    state_path = Path(checkpoint.path) / STATE_FILE
    if not state_path.is_file():
        return []
    state = torch.load(state_path, map_location="cpu", weights_only=False)
    return list(state.get("lineage", []))


def write_summary(results: Any, exp_dir: Path, objective: str, searched: list[str]) -> dict[str, Any]:
    trials = []
    for result in results:
        df = result.metrics_dataframe
        history = []
        if df is not None and objective in df:
            for step, value in zip(df["step"], df[objective]):
                if value == value:  # skip NaN rows (reports without the objective)
                    history.append({"step": int(step), "value": float(value)})
        best_ckpt = None
        if history:
            try:
                best = result.get_best_checkpoint(objective, "min")
                best_ckpt = best.path if best is not None else None
            except (RuntimeError, ValueError):
                best_ckpt = None
        trial_id = Path(result.path).name.removeprefix("trial_")
        trials.append(
            {
                "trial_id": trial_id,
                "path": result.path,
                "config": {k: result.config.get(k) for k in searched},
                "history": history,
                "best": min((h["value"] for h in history), default=None),
                "final": history[-1]["value"] if history else None,
                "steps": history[-1]["step"] if history else 0,
                "lineage": _lineage(result.checkpoint),
                "best_checkpoint": best_ckpt,
                "error": str(result.error).splitlines()[0] if result.error else None,
            }
        )
    finished = [t for t in trials if t["best"] is not None and math.isfinite(t["best"])]
    best_trial = min(finished, key=lambda t: t["best"]) if finished else None
    summary = {
        "objective": objective,
        "mode": "min",
        "objective_is_fid": objective == "metric/fid",
        "experiment_dir": str(exp_dir),
        "trials": trials,
        "best_trial": best_trial["trial_id"] if best_trial else None,
        "best_config": best_trial["config"] if best_trial else None,
        "best_value": best_trial["best"] if best_trial else None,
    }
    exp_dir.mkdir(parents=True, exist_ok=True)
    path = exp_dir / "summary.json"
    fd, tmp = tempfile.mkstemp(dir=exp_dir, prefix=".summary.json.")
    with os.fdopen(fd, "w") as f:
        json.dump(summary, f, indent=2, default=str)
    os.replace(tmp, path)
    return summary


def print_summary(summary: dict[str, Any], exp_dir: Path) -> None:
    objective = summary["objective"].removeprefix("metric/")
    keys = list(summary["best_config"] or (summary["trials"][0]["config"] if summary["trials"] else {}))
    header = ["trial", "steps", f"first {objective}", f"best {objective}", "exploits"] + [k.split(".")[-1] for k in keys]
    rows = []
    for t in summary["trials"]:
        first = t["history"][0]["value"] if t["history"] else float("nan")
        rows.append([t["trial_id"], str(t["steps"]), f"{first:.4g}", f"{t['best'] if t['best'] is not None else float('nan'):.4g}",
                     str(len(t["lineage"]))] + [f"{t['config'].get(k):.4g}" if isinstance(t["config"].get(k), float) else str(t["config"].get(k)) for k in keys])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    print()
    for r in [header] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    if not summary["objective_is_fid"]:
        print(f"\nnote: {objective} is a Frechet distance on randomly initialised Inception features, not FID")
    if summary["best_trial"]:
        print(f"\nbest trial {summary['best_trial']}: {objective} {summary['best_value']:.4g}")
        for k, v in (summary["best_config"] or {}).items():
            print(f"  {k}: {v}")
    print(f"\nsummary: {exp_dir / 'summary.json'}")
    print(f"tensorboard --logdir {exp_dir}")
