"""Disk footprint of a search's checkpoints, with checkpoint retention and without it.

    .venv/bin/python benchmarks/retention_footprint.py [--space tune_spaces/demo.yaml] [--smoke]
        [--set train.steps=40 --set eval_every=5 ...]

Runs the same search twice in one run, each into its own temporary storage folder: first keeping
every checkpoint (`checkpoints: all`, what Tune does by itself), then with the space file's
retention (`checkpoints`, by default each trial's last 2 and best 1; ray_jobs/retention.py).
For each it prints the checkpoints left at the end (count and bytes), the largest footprint of
checkpoints seen while it ran (sampled every second), the whole experiment folder, and the ratio
of the two. The two searches draw their own samples, so their exploits (and the checkpoints
those keep) differ a little. `--set` changes the space file (a top-level key such as
`eval_every`) or its base config (a dotted key, as the space file's `overrides`): more
evaluations per trial show how the footprint grows with the search's length.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from ray_jobs.tune_driver import run_search  # noqa: E402


def _checkpoints(exp: Path) -> tuple[int, int]:
    """(number, bytes) of the trials' checkpoint folders under exp."""
    folders = list(exp.glob("trial_*/checkpoint_*"))
    return len(folders), sum(_bytes(f) for f in folders)


def _bytes(folder: Path) -> int:
    total = 0
    for path in folder.rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:  # deleted under us (retention, Tune's temp files)
            continue
    return total


def _search(space: Path, storage: Path, checkpoints: Any, smoke: bool, sets: dict[str, Any]) -> dict[str, float]:
    spec = yaml.safe_load(space.read_text())
    for key, value in sets.items():
        if "." in key:
            spec.setdefault("overrides", {})[key] = value
        else:
            spec[key] = value
    spec["base"] = str((space.parent / spec["base"]).resolve())
    spec["storage_path"] = str(storage)
    if checkpoints is not None:
        spec["checkpoints"] = checkpoints
    path = storage / "space.yaml"
    storage.mkdir(parents=True)
    path.write_text(yaml.safe_dump(spec))
    exp = storage / spec["name"]
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(1.0):
            peak[0] = max(peak[0], _checkpoints(exp)[1])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run_search(path, smoke=smoke)
    finally:
        done.set()
        sampler.join()
    count, size = _checkpoints(exp)
    return {"count": count, "bytes": size, "peak": max(peak[0], size), "folder": _bytes(exp)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", type=Path, default=Path("tune_spaces/demo.yaml"))
    parser.add_argument("--smoke", action="store_true", help="the space's --smoke search (seconds, not minutes)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a space file key (eval_every=5) or a dotted base config key (train.steps=40)")
    args = parser.parse_args()
    sets = {k: yaml.safe_load(v) for k, _, v in (item.partition("=") for item in args.set)}
    kept = yaml.safe_load(args.space.read_text()).get("checkpoints")
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        rows["all"] = _search(args.space, Path(tmp) / "all", "all", args.smoke, sets)
        rows["retention"] = _search(args.space, Path(tmp) / "retention", None, args.smoke, sets)
    mb = 2 ** 20
    print(f"\n{args.space}{' --smoke' if args.smoke else ''}{''.join(f' --set {s}' for s in args.set)}: checkpoints on disk")
    print(f"{'checkpoints':<28} {'at the end':>10} {'MiB':>9} {'peak MiB':>9} {'folder MiB':>11}")
    for name, label in (("all", "all (Tune's own)"), ("retention", f"retention {kept or 'default (2 last, 1 best)'}")):
        r = rows[name]
        print(f"{label:<28} {r['count']:>10} {r['bytes'] / mb:>9.1f} {r['peak'] / mb:>9.1f} {r['folder'] / mb:>11.1f}")
    print(f"retention / all: {rows['retention']['bytes'] / rows['all']['bytes']:.3f} at the end, "
          f"{rows['retention']['peak'] / rows['all']['peak']:.3f} at the peak")


if __name__ == "__main__":
    main()
