"""Make the reference packages (pytorch-fid, dists-pytorch, lpips, piq) importable on CPU torch.

Used by the parity tests and the benchmarks only; gantune's own code never imports torchvision.
PyPI's torchvision wheel is a CUDA build: beside the CPU torch its C++ ops do not load, and
`import torchvision` then fails registering fake kernels for nms/qnms. The reference packages
need only its pure-Python models, so the two op schemas are declared when the real ones are
absent. Where the ops load (GPU machines), nothing changes.
"""

from __future__ import annotations

import sys

import torch

_KEEP: list[torch.library.Library] = []


def make_torchvision_importable() -> None:
    try:
        import torchvision  # noqa: F401

        return
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _KEEP.append(lib)  # the schemas live as long as the Library object
    import torchvision  # noqa: F401,F811
