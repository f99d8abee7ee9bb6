"""Datasets and loaders, CPU-only: the landscape classes, the procedural scene generator, the
image/label folder dataset and its preview grid."""
