"""Our FID pipeline against pytorch-fid 0.3.0, side by side, on the same weights and images.

    .venv/bin/python benchmarks/fid_bench.py [--n 200 --size 128 --blur 0 --repeat 1 --dims 2048]

Writes N built-in scenes to folder A and N other scenes (optionally box-blurred) to folder B,
builds random Inception weights (seed 0) with batch norms recalibrated on A so the features are
O(1), and saves that state dict. Our side is `fid_between_folders` end to end, reading the file
as if it were the official one (checksum patched in this process); pytorch-fid's
`calculate_fid_given_paths` gets the same file through its monkeypatched download. Prints both
times, their ratio and |delta|. pytorch-fid needs `import torchvision`, whose C ops do not load
beside a CPU build of torch: `_import_pytorch_fid` repeats the shim of tests/conftest.py.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

from backbones import pretrained  # noqa: E402
from backbones.inception import build_fid_inception, recalibrate_batch_norm  # noqa: E402
from data.scenes import render_scene  # noqa: E402
from metrics.fid import fid_between_folders, resolve_device  # noqa: E402
from gantune.reference_compat import make_torchvision_importable  # noqa: E402
from metrics.image_folder import ImageFolderBatches, list_images  # noqa: E402

def _import_pytorch_fid():  # type: ignore[no-untyped-def]
    make_torchvision_importable()
    import pytorch_fid.fid_score
    import pytorch_fid.inception

    return pytorch_fid


def write_folder(folder: Path, start: int, n: int, size_px: int, blur_px: int) -> None:
    folder.mkdir(parents=True)
    for i in range(start, start + n):
        img = render_scene(i, size_px, 0)[0]
        if blur_px > 1:
            x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
            x = F.avg_pool2d(F.pad(x, (blur_px // 2,) * 4, mode="reflect"), blur_px, stride=1)
            img = x[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
        Image.fromarray(img).save(folder / f"{i:05d}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="images per folder")
    parser.add_argument("--size", type=int, default=128, help="scene side in px")
    parser.add_argument("--blur", type=int, default=0, help="box blur of folder B in px (0: none)")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    parser.add_argument("--repeat", type=int, default=1, help="runs per side; the best time counts")
    parser.add_argument("--dims", type=int, choices=[64, 192, 768, 2048], default=2048,
                        help="Inception feature layer on both sides (pytorch-fid's --dims)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    device = resolve_device(args.device)
    pfid = _import_pytorch_fid()

    with tempfile.TemporaryDirectory(prefix="fid_bench_") as tmp:
        root = Path(tmp)
        a, b, weights = root / "a", root / "b", root / "weights"
        write_folder(a, 0, args.n, args.size, 0)
        write_folder(b, 100_000, args.n, args.size, args.blur)

        # One set of random weights, recalibrated on A, saved under the official file name.
        net = build_fid_inception(random_weights=True, seed=0)
        recalibrate_batch_norm(
            net, ImageFolderBatches(list_images(a), args.batch_size), device=device
        )
        weights.mkdir()
        path = weights / pretrained.WEIGHT_FILES["inception"].filename
        torch.save({k: v.cpu() for k, v in net.state_dict().items()}, path)
        wf = dataclasses.replace(
            pretrained.WEIGHT_FILES["inception"], sha256=pretrained.sha256_of(path)
        )
        pretrained.WEIGHT_FILES["inception"] = wf
        pfid.inception.load_state_dict_from_url = lambda *a, **k: torch.load(
            path, weights_only=True
        )
        with torch.no_grad():  # warm up the kernels once so neither side pays for it
            net.to(device)(torch.rand(2, 3, 64, 64, device=device))

        # Alternate the two sides and keep each one's best time: the CPUs here are shared.
        t_ours, t_theirs = float("inf"), float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            ours = fid_between_folders(
                a,
                b,
                batch_size=args.batch_size,
                device=device,
                weights_dir=weights,
                dims=args.dims,
                use_cache=False,
                progress=False,
            )
            t_ours = min(t_ours, time.perf_counter() - t0)
            t0 = time.perf_counter()
            theirs = float(
                pfid.fid_score.calculate_fid_given_paths(
                    [str(a), str(b)], args.batch_size, device, args.dims, num_workers=0
                )
            )
            t_theirs = min(t_theirs, time.perf_counter() - t0)

    print(
        f"{args.n} vs {args.n} scenes of {args.size} px (B blurred {args.blur} px), "
        f"batch {args.batch_size}, {device}, {torch.get_num_threads()} threads, "
        f"best of {args.repeat}, {args.dims}-d features; "
        "random Inception, batch norm recalibrated on A: NOT FID values"
    )
    print(f"ours (gantune)  {t_ours:8.2f} s   distance {ours.value:.6f}")
    print(f"pytorch-fid     {t_theirs:8.2f} s   distance {theirs:.6f}")
    delta = abs(ours.value - theirs)
    print(
        f"time ratio ours/pytorch-fid {t_ours / t_theirs:.3f}   "
        f"|delta| {delta:.3g}   relative {delta / abs(theirs):.3g}"
    )
    if not np.isfinite(ours.value):
        sys.exit(1)


if __name__ == "__main__":
    main()
