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


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`make test` runs two pytest-xdist workers. Every test on the one local SLURM cluster (its
    network-namespace hosts) goes to the same worker, which starts the cluster once; the others
    are shared out one by one. (xdist_group marks are lost under pytest 9: the group rides on a
    node id that pytest no longer lets plugins rewrite.)"""
    from xdist.scheduler import LoadScopeScheduling

    class HostsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "hosts" if module.endswith(("test_slurm.py", "test_local_cluster.py")) else nodeid

    return HostsTogether(config, log)


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

