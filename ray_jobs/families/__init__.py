"""Generator families, by `model.family`: every family there is, in one dict.

The interface they share is in base.py; each family is a file of its own here.
"""

from __future__ import annotations

from ray_jobs.families.base import Batch, Family, Net, Phase
from ray_jobs.families.exemplar import Cocosnet2Family, CocosnetFamily, UniteFamily
from ray_jobs.families.inpaint import PdganFamily
from ray_jobs.families.oasis import OasisFamily
from ray_jobs.families.spade import SpadeFamily
from ray_jobs.families.sr import EsrganFamily, RdnFamily, SrresnetFamily
from ray_jobs.families.unpaired import CycleganFamily, UgatitFamily

FAMILIES: dict[str, type[Family]] = {
    "spade": SpadeFamily,
    "oasis": OasisFamily,
    "cocosnet": CocosnetFamily,
    "cocosnet2": Cocosnet2Family,
    "unite": UniteFamily,
    "esrgan": EsrganFamily,
    "rdn": RdnFamily,
    "srresnet": SrresnetFamily,
    "cyclegan": CycleganFamily,
    "ugatit": UgatitFamily,
    "pdgan": PdganFamily,
}

__all__ = ["FAMILIES", "Batch", "Family", "Net", "Phase"]
