"""gantune: hyperparameter search for conditional GANs.

The code lives in the top-level packages (`data/`, `models/`, `losses/`, `metrics/`,
`backbones/`, `ray_jobs/`, `slurm/`); this package holds only what all of them share.
"""

__version__ = "0.1.0"
