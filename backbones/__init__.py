"""Pretrained feature networks shared by the losses and the metrics: VGG16, VGG19, FID Inception.

`pretrained.py` finds and verifies their weight files; the architectures live beside it with
the state-dict keys of the files they load, so `load_state_dict(strict=True)` proves the match.
"""
