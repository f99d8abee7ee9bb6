"""The end of a search: summary.json in the experiment folder, a table, the best config.

Per trial: sampled config, objective history, best value, steps, its PBT exploits (Ray's
pbt_policy files), the lineage of its final weights (recorded by the trainer in every checkpoint:
each donor it continued from), the hosts its workers ran on, the path of its best checkpoint,
and its non-finite steps: skipped, rolled back, and why it gave up, if it did.
"""

from __future__ import annotations

import csv
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from gantune.errors import GantuneError
from ray_jobs.checkpoint import read_meta


def _lineage(checkpoint: Any) -> list[dict[str, Any]]:
    if checkpoint is None:
        return []
    try:
        return list(read_meta(Path(checkpoint.path)).get("lineage", []))
    except GantuneError:
        return []


def _reports(trial_dir: Path) -> list[dict[str, str]]:
    """Every report of a trial, in order, from the progress.csv Tune writes (flushed per row,
    unlike result.json, whose last lines may still be buffered when fit() returns)."""
    path = trial_dir / "progress.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _scalar(text: str | None) -> Any:
    """A CSV cell back to a number where it is one (choice domains may hold strings, "" too)."""
    if text is None or text == "":
        return text
    try:
        return float(text)
    except ValueError:
        return text


def _exploits(exp_dir: Path, trial_id: str) -> list[dict[str, Any]]:
    """PBT's own record of this trial's exploits: pbt_global.txt, one JSON list a line for every
    exploit of the search: [trial tag, donor tag, iteration, donor iteration, donor config, new
    config]; a tag starts with the trial's index. (pbt_policy_<trial>.txt is the schedule to
    replay the trial's final weights: it holds its donors' exploits, and loses its own earlier
    ones at each exploit.)"""
    path = exp_dir / "pbt_global.txt"
    if not path.is_file():
        return []
    index = str(int(trial_id.rsplit("_", 1)[-1]))  # trial_id "<experiment>_<index, 5 digits>"
    events = []
    for line in path.read_text().splitlines():
        tag, donor, iteration, donor_iteration, _, new_config = json.loads(line)
        if tag.split("_", 1)[0] == index:
            events.append({"iteration": iteration, "donor": donor, "donor_iteration": donor_iteration,
                           "new_config": new_config})
    return events


def write_summary(
    results: Any, exp_dir: Path, objective: str, mode: str, searched: list[str], complete: bool = True
) -> dict[str, Any]:
    """summary.json: per trial its history, best (in `mode`: min or max) and exploits, and the
    best trial of the search."""
    best_of = min if mode == "min" else max
    trials = []
    for result in results:
        reports = _reports(Path(result.path))
        history = [
            {"step": int(r["step"]), "value": float(r[objective]),
             "config": {k: _scalar(r.get(f"hp/{k}")) for k in searched},
             **({"restored_from": r["exploit/from_trial"], "restored_step": int(float(r["exploit/from_step"]))}
                if r.get("exploit/from_trial") else {}),
             # Why this value is the sentinel: the trial gave up, or its score was not finite.
             **({"reason": r["diverged_reason"]} if r.get("diverged_reason") else {})}
            for r in reports
            if r.get(objective) and r.get("step")
        ]
        best_ckpt = None
        if history:
            try:
                best = result.get_best_checkpoint(objective, mode)
                best_ckpt = best.path if best is not None else None
            except (RuntimeError, ValueError):
                best_ckpt = None
        trial_id = Path(result.path).name.removeprefix("trial_")
        trials.append(
            {
                "trial_id": trial_id,
                # Every host a worker of this trial ran on, over all its reports.
                "hosts": sorted({h for r in reports for h in (r.get("hosts") or "").split(",") if h}),
                "path": result.path,
                "config": {k: result.config.get(k) for k in searched},
                "history": history,
                "best": best_of((h["value"] for h in history), default=None),
                "final": history[-1]["value"] if history else None,
                "steps": history[-1]["step"] if history else 0,
                "exploits": _exploits(exp_dir, trial_id),
                "lineage": _lineage(result.checkpoint),
                "best_checkpoint": best_ckpt,
                "error": str(result.error).splitlines()[0] if result.error else None,
                # Non-finite training (trainer.py): steps skipped, rollbacks, and why it gave up.
                "skipped_steps": int(_scalar(reports[-1].get("train/skipped_steps")) or 0) if reports else 0,
                "rollbacks": int(_scalar(reports[-1].get("train/rollbacks")) or 0) if reports else 0,
                "gave_up": (reports[-1].get("diverged_reason") or None)
                if reports and _scalar(reports[-1].get("diverged")) else None,
            }
        )
    finished = [t for t in trials if t["best"] is not None and math.isfinite(t["best"])]
    best_trial = best_of(finished, key=lambda t: t["best"]) if finished else None
    summary = {
        "objective": objective,
        "mode": mode,
        "objective_is_fid": objective == "metric/fid",
        "complete": complete,  # False: interrupted, `gantune tune SPACE --resume` continues it
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
                     str(len(t["exploits"]))] + [f"{t['config'].get(k):.4g}" if isinstance(t["config"].get(k), float) else str(t["config"].get(k)) for k in keys])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    print()
    for r in [header] + rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    official = "KID" if objective.startswith("k") else "FID"
    if "random_inception" in objective:
        kind = "kernel" if official == "KID" else "Frechet"
        print(f"\nnote: {objective} is a {kind} distance on randomly initialised Inception features, not {official}")
    elif "_dims" in objective:
        print(f"\nnote: {objective} uses another Inception layer than pool3; not comparable to published {official}")
    if summary["best_trial"]:
        print(f"\nbest trial {summary['best_trial']}: {objective} {summary['best_value']:.4g}")
        for k, v in (summary["best_config"] or {}).items():
            print(f"  {k}: {v}")
    print(f"\nsummary: {exp_dir / 'summary.json'}")
    print(f"tensorboard --logdir {exp_dir}")
