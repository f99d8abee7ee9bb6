"""A contact sheet of a dataset folder: each cell a colourised label beside its photo.

For looking at a dataset before training on it (`gantune data preview DIR -o grid.png`). Pairs
come from the same pairing and checks as FolderDataset, so a folder that previews also loads.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from PIL import Image

from data.classes import NUM_CLASSES, PALETTE
from data.folder import load_pair, pair_files, write_image_atomic
from gantune.errors import GantuneError

log = logging.getLogger(__name__)

THUMB_PX = 128
_GAP_PX = 4
_BACKGROUND = (40, 40, 40)


def _thumbnail(image: Image.Image, resample: Image.Resampling) -> Image.Image:
    """image fitted inside THUMB_PX x THUMB_PX, aspect kept, centred on the background."""
    w, h = image.size
    scale = THUMB_PX / max(w, h)
    fitted = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), resample)
    cell = Image.new("RGB", (THUMB_PX, THUMB_PX), _BACKGROUND)
    cell.paste(fitted, ((THUMB_PX - fitted.width) // 2, (THUMB_PX - fitted.height) // 2))
    return cell


def write_preview(folder: Path, out_png: Path, max_items: int = 16) -> None:
    """Write a PNG grid of up to max_items (label, photo) pairs from folder, sorted by stem."""
    if max_items < 1:
        raise GantuneError(f"max_items must be at least 1, got {max_items}")
    pairs = pair_files(Path(folder))[:max_items]
    cols = math.ceil(math.sqrt(len(pairs)))
    rows = math.ceil(len(pairs) / cols)
    cell_w, cell_h = 2 * THUMB_PX + _GAP_PX, THUMB_PX + _GAP_PX
    sheet = Image.new("RGB", (cols * cell_w + _GAP_PX, rows * cell_h + _GAP_PX), _BACKGROUND)
    for k, (image_path, label_path) in enumerate(pairs):
        image, ids = load_pair(image_path, label_path, NUM_CLASSES)
        labels = Image.fromarray(PALETTE[ids])
        x, y = _GAP_PX + (k % cols) * cell_w, _GAP_PX + (k // cols) * cell_h
        # Nearest for labels: a blended class colour would be no class at all.
        sheet.paste(_thumbnail(labels, Image.Resampling.NEAREST), (x, y))
        sheet.paste(_thumbnail(image, Image.Resampling.BICUBIC), (x + THUMB_PX, y))
    out_png = Path(out_png)
    if not out_png.parent.is_dir():
        raise GantuneError(f"{out_png.parent}: folder for the preview does not exist")
    write_image_atomic(sheet, out_png, "PNG")
    log.info("wrote a preview of %d pairs from %s to %s", len(pairs), folder, out_png)

