"""Shared test set-up: reference packages importable offline, isolated weight folders, markers."""

from __future__ import annotations

import pytest
import torch

from gantune.reference_compat import make_torchvision_importable


make_torchvision_importable()


@pytest.fixture(autouse=True)
def _isolated_weights(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Tests never see the user's hub cache, weights folder or statistics cache."""
    home = tmp_path_factory.mktemp("torch_home")
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("GANTUNE_WEIGHTS_DIR", raising=False)
    # Not XDG_CACHE_HOME: torch keeps DeepSpeed's compiled ops there.
    monkeypatch.setenv("GANTUNE_CACHE_DIR", str(home / "cache"))
    torch.hub.set_dir(str(home / "hub"))
    yield


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # `make test` runs two pytest-xdist workers: the tests on the one local SLURM cluster (and
    # its network-namespace hosts) all go to the same one, which starts it once.
    for item in items:
        if "local_cluster" in getattr(item, "fixturenames", ()) or item.module.__name__ in ("test_slurm", "test_local_cluster"):
            item.add_marker(pytest.mark.xdist_group("hosts"))
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

