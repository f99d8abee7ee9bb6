"""The `gantune` command line: one sub-command per job, each a thin call into its package.

Bad input raises GantuneError anywhere below; here it becomes one line on stderr and exit 2.
Heavy imports (Ray, DeepSpeed, the networks) happen inside the handlers, so `gantune --help`
and `gantune weights list` answer at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import NoReturn

from gantune.errors import GantuneError
from ray_jobs.config import FID_DIMS


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage mistake in one line instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _cmd_data_scenes(args: argparse.Namespace) -> None:
    from data.scenes import write_scene_folder

    write_scene_folder(args.out, n=args.n, size_px=args.size, seed=args.seed)
    print(f"wrote {args.n} scenes of {args.size}px to {args.out}/imgs and {args.out}/labels")


def _cmd_data_preview(args: argparse.Namespace) -> None:
    from data.preview import write_preview

    write_preview(args.dir, args.output, max_items=args.max_items)
    print(f"wrote {args.output}")


def _cmd_fid(args: argparse.Namespace) -> None:
    from metrics.fid import fid_between_folders

    result = fid_between_folders(
        args.dir_a,
        args.dir_b,
        batch_size=args.batch_size,
        device=args.device,
        random_weights=args.random_weights,
        dims=args.dims,
        weights_dir=args.weights_dir,
    )
    print(f"{result.metric}: {result.value:.4f}  ({result.n_a} vs {result.n_b} images)")
    if result.note:
        print(result.note)


def _cmd_weights(args: argparse.Namespace) -> None:
    from backbones import pretrained

    names = args.names or sorted(pretrained.WEIGHT_FILES)
    for name in names:
        pretrained.weight_file(name)  # unknown names fail before any work
    if args.action == "fetch":
        for name in names:
            print(f"{name}: {pretrained.fetch(name, args.weights_dir)}")
        return
    bad = 0
    for name in names:
        wf = pretrained.WEIGHT_FILES[name]
        state, path = (
            pretrained.status(name, args.weights_dir)
            if args.action == "verify"
            else _where(name, args.weights_dir)
        )
        bad += state not in ("ok", "present")
        print(f"{name:10s} {state:13s} {path}  sha256 {wf.sha256[:12]}  ({wf.used_by})")
    if args.action == "verify" and bad:
        raise GantuneError(f"{bad} weight file(s) missing or corrupt; see above")


def _where(name: str, weights_dir: str | None) -> tuple[str, Path]:
    """For `list`: where the file is or would be looked for, without hashing it."""
    from backbones import pretrained

    try:
        return "present", pretrained.locate(name, weights_dir)
    except GantuneError:
        wf = pretrained.WEIGHT_FILES[name]
        return "missing", pretrained.search_dirs(weights_dir)[0] / wf.filename


def _cmd_train(args: argparse.Namespace) -> None:
    from ray_jobs import config as config_lib
    from ray_jobs.train_local import train_local

    cfg = config_lib.load(args.config, config_lib.parse_set(args.set))
    run_dir = args.run_dir or Path("runs") / args.config.stem
    metrics = train_local(cfg, run_dir, resume=args.resume)
    print(f"run folder: {run_dir}")
    for key, value in metrics.items():
        print(f"{key}: {value:.4f}")
    print(f"tensorboard --logdir {run_dir}")


def _cmd_tune(args: argparse.Namespace) -> None:
    from ray_jobs.tune_driver import run_search

    run_search(args.space, resume=args.resume, smoke=args.smoke, ray_address=args.address or None)


def _cmd_demo(args: argparse.Namespace) -> None:
    import time

    from ray_jobs.space import load_spec
    from ray_jobs.tune_driver import run_search

    space = Path(__file__).resolve().parent.parent / "tune_spaces" / "demo.yaml"
    storage = load_spec(space).storage_path
    if args.resume:
        # The newest demo that has not written its summary yet.
        unfinished = sorted(p for p in storage.glob("demo-*") if not (p / "summary.json").exists())
        if not unfinished:
            raise GantuneError(f"{storage}: no unfinished demo-* search to resume")
        name = unfinished[-1].name
    else:
        name = time.strftime("demo-%Y%m%d-%H%M%S")  # every demo run gets its own folder
    run_search(space, resume=args.resume, name=name)


def _cmd_slurm(args: argparse.Namespace) -> None:
    from slurm import submit

    if args.target in ("status", "cancel"):
        if args.run is None:
            raise GantuneError(f"gantune slurm {args.target} needs RUN: the job folder gantune slurm printed")
        print(submit.status(args.run) if args.target == "status" else submit.cancel(args.run))
        return
    if args.run is not None:
        raise GantuneError(f"gantune slurm {args.target}: unexpected {args.run!r} (status and cancel take RUN)")
    space = Path(args.target)
    if not space.is_file():
        raise GantuneError(f"{space}: no such space file (or use gantune slurm status|cancel RUN)")
    for flag, value in (("--partition", args.partition), ("--time", args.time)):
        if value is None:
            raise GantuneError(f"gantune slurm {space}: {flag} is required")
    cpus = args.cpus_per_node if args.cpus_per_node is not None else submit.partition_cpus(args.partition)
    req = submit.SlurmRequest(
        space=space, nodes=args.nodes, gpus_per_node=args.gpus_per_node, cpus_per_node=cpus,
        partition=args.partition, time_min=args.time, account=args.account, qos=args.qos,
        constraint=args.constraint, mem=args.mem, workers_per_trial=args.workers_per_trial,
        cpus_per_worker=args.cpus_per_worker,
        smoke=args.smoke, name=args.name,
    )
    if args.dry_run:
        print(submit.dry_run(req))
        return
    print(submit.describe(submit.submit(req)))


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gantune", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    data = sub.add_parser("data", help="the built-in scene dataset")
    data_sub = data.add_subparsers(dest="data_command", required=True, parser_class=_Parser)
    scenes = data_sub.add_parser("scenes", help="render procedural scenes to OUT/imgs, OUT/labels")
    scenes.add_argument("out", type=Path)
    scenes.add_argument("--n", type=_positive_int, default=100, help="number of scenes")
    scenes.add_argument("--size", type=_positive_int, default=256, help="side in px, 32..512")
    scenes.add_argument("--seed", type=int, default=0)
    scenes.set_defaults(handler=_cmd_data_scenes)
    preview = data_sub.add_parser("preview", help="grid of colourised labels beside images")
    preview.add_argument("dir", type=Path)
    preview.add_argument("-o", "--output", type=Path, default=Path("grid.png"))
    preview.add_argument("--max-items", type=_positive_int, default=16)
    preview.set_defaults(handler=_cmd_data_preview)

    train = sub.add_parser("train", help="one training run, no search")
    train.add_argument("config", type=Path)
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a dotted config key, e.g. loss.lambda_cx=2.0")
    train.add_argument("--run-dir", type=Path, default=None, help="default: runs/<config name>")
    train.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/latest")
    train.set_defaults(handler=_cmd_train)

    tune = sub.add_parser("tune", help="a Ray Tune search (PBT, ASHA or random/grid)")
    tune.add_argument("space", type=Path)
    tune.add_argument("--resume", action="store_true", help="continue an interrupted search")
    tune.add_argument("--smoke", action="store_true",
                      help="2 trials, 2 evaluations of a few steps, smallest width: a first try")
    tune.add_argument("--address", default=os.environ.get("RAY_ADDRESS"), metavar="HOST:PORT",
                      help="join this running Ray cluster (one started with `ray start`; default "
                           "$RAY_ADDRESS) instead of starting one on this machine")
    tune.set_defaults(handler=_cmd_tune)

    demo = sub.add_parser("demo", help="PBT on the built-in scenes (tune_spaces/demo.yaml)")
    demo.add_argument("--resume", action="store_true")
    demo.set_defaults(handler=_cmd_demo)

    slurm = sub.add_parser(
        "slurm", help="the search as one SLURM job over N nodes (submitit + Ray); status|cancel RUN",
        description="gantune slurm SPACE.yaml --partition P --time MIN [...] submits; "
        "gantune slurm status RUN / gantune slurm cancel RUN follow or end it.")
    slurm.add_argument("target", metavar="SPACE.yaml|status|cancel")
    slurm.add_argument("run", nargs="?", type=Path, default=None, metavar="RUN",
                       help="for status/cancel: the job folder (<name>.slurm) or the experiment folder")
    slurm.add_argument("--nodes", type=_positive_int, default=1)
    slurm.add_argument("--gpus-per-node", type=_non_negative_int, default=0)
    slurm.add_argument("--cpus-per-node", type=_positive_int, default=None,
                       help="default: the CPUs of the partition's smallest node")
    slurm.add_argument("--partition", default=None)
    slurm.add_argument("--time", type=_positive_int, default=None, help="time limit in minutes")
    slurm.add_argument("--account", default=None)
    slurm.add_argument("--qos", default=None)
    slurm.add_argument("--constraint", default=None)
    slurm.add_argument("--mem", default=None, help="memory per node, as sbatch --mem (e.g. 64G)")
    slurm.add_argument("--workers-per-trial", type=_positive_int, default=None,
                       help="Ray Train workers per trial: one GPU each, or one node each without GPUs")
    slurm.add_argument("--cpus-per-worker", type=_positive_int, default=None,
                       help="CPUs of each worker (default: C // G with GPUs, the whole node without)")
    slurm.add_argument("--smoke", action="store_true", help="2 trials, a few steps: check the set-up")
    slurm.add_argument("--dry-run", action="store_true", help="print the sbatch script and Ray commands")
    slurm.add_argument("--name", default=None,
                       help="experiment name (default: the space's name + time); an existing one resumes")
    slurm.set_defaults(handler=_cmd_slurm)

    fid = sub.add_parser("fid", help="FID between two image folders")
    fid.add_argument("dir_a", type=Path)
    fid.add_argument("dir_b", type=Path)
    fid.add_argument("--batch-size", type=_positive_int, default=50)
    fid.add_argument("--device", default="auto", help="cpu, cuda, cuda:N (default: cuda if any)")
    fid.add_argument("--weights-dir", default=None, help="folder holding the Inception file")
    fid.add_argument("--dims", type=int, choices=FID_DIMS, default=2048,
                     help="Inception feature layer, as pytorch-fid's --dims (default: 2048, FID)")
    fid.add_argument(
        "--random-weights",
        action="store_true",
        help="randomly initialised Inception, batch norm recalibrated on DIR_A; "
        "reported as fd_random_inception, not FID",
    )
    fid.set_defaults(handler=_cmd_fid)

    weights = sub.add_parser("weights", help="pretrained VGG16, VGG19 and Inception files")
    weights.add_argument("action", choices=["list", "verify", "fetch"])
    weights.add_argument("names", nargs="*", help="vgg16, vgg19, inception (default: all)")
    weights.add_argument("--weights-dir", default=None, help="folder to use before the hub cache")
    weights.set_defaults(handler=_cmd_weights)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        args.handler(args)
    except GantuneError as e:
        print(f"gantune: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # permission, a missing parent, a full disk: the path and the reason
        where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None) or "?"
        print(f"gantune: error: {where}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gantune: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
