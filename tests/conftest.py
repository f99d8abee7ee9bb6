"""Shared test set-up: reference packages importable offline, isolated weight folders, markers."""

from __future__ import annotations

import os

import pytest
import torch


def _make_torchvision_importable() -> None:
    """PyPI's torchvision wheel is a CUDA build; beside the CPU torch its C++ ops do not load,
    and `import torchvision` then fails registering fake kernels for nms/qnms. The reference
    packages (pytorch-fid, dists-pytorch, lpips, piq) need only its pure-Python models, so
    declare those two op schemas when the real ones are absent. GPU machines load the real ops.
    """
    try:
        import torchvision  # noqa: F401

        return
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
    import sys

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "DEF")  # noqa: F841 - kept alive below
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _KEEP.append(lib)
    import torchvision  # noqa: F401,F811


_KEEP: list[object] = []
_make_torchvision_importable()


@pytest.fixture(autouse=True)
def _isolated_weights(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Tests never see the user's hub cache or weights folder."""
    home = tmp_path_factory.mktemp("torch_home")
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("GANTUNE_WEIGHTS_DIR", raising=False)
    torch.hub.set_dir(str(home / "hub"))
    yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def seed() -> int:
    torch.manual_seed(0)
    return 0


os.environ.setdefault("OMP_NUM_THREADS", "2")
