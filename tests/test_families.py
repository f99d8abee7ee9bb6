"""The family interface: every family in the one dict is well formed, and the trainer drives
whatever nets and phases a family declares."""

from __future__ import annotations

import dataclasses

import pytest

from ray_jobs import config as C
from ray_jobs.families import FAMILIES


def test_the_dict_names_every_family_the_config_accepts() -> None:
    assert set(FAMILIES) == set(C._CHOICES["model.family"])


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_family_declares_its_nets_and_phases(name: str) -> None:
    family = FAMILIES[name]
    nets = [net.name for net in family.nets]
    assert len(set(nets)) == len(nets), "net names are engine names and checkpoint tags: unique"
    optim_keys = {f.name for f in dataclasses.fields(C.OptimConfig)}
    assert all(net.lr_key in optim_keys for net in family.nets)
    assert family.phases and all(phase.net in nets and phase.every >= 1 for phase in family.phases)
    # Its smoke config is a valid config of this family.
    cfg = C.with_values(C.Config(), {"model.family": name, **family.smoke_overrides})
    assert cfg.model.family == name
