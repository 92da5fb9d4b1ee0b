"""The one dataset format on disk, read and written by every msgnet command.

```
DIR/dataset.json        classes, colours, image size, channels, splits, provenance, rule, augmentations
DIR/images/NNNNNN.png   the images (L, LA or RGB; 2-channel images are stored as LA)
DIR/layouts/NNNNNN.png  uint8 class index per pixel, 0 = background
DIR/masks/NNNNNN.png    optional: finer per-pixel masks (e.g. digit strokes), same classes
DIR/annotations.json    COCO-compatible: images, annotations (category_id, bbox [x, y, w, h]), categories
```

Splits: ``train``, ``val`` and ``test``. Older sets have only train and val, and a split
may be empty (``--test-fraction 0``), so readers ask :meth:`Dataset.evaluation_splits`
which split to select on and which to report on instead of assuming a test split.

Every reader validates what it reads and raises :class:`DataError` naming the file.
Writers build the whole set in a temporary sibling directory and rename it into place,
so an interrupted build never leaves a half-written dataset behind.
"""

from __future__ import annotations

# The format's public face: its schema, reader and writer live in modules of their own.
from msgnet.data.reader import Dataset, image_to_array, open_dataset
from msgnet.data.schema import (FORMAT_NAME, FORMAT_VERSION, GEOMETRIC_AUGMENTATIONS, SPLITS, ClassInfo, DatasetInfo,
                                check_augmentations, image_name, parse_augmentations)
from msgnet.data.writer import TMP_PREFIX, DatasetWriter, coco_document, write_files
from msgnet.layouts.boxes import ObjectAnnotation

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "GEOMETRIC_AUGMENTATIONS", "SPLITS", "ClassInfo", "Dataset", "DatasetInfo",
           "DatasetWriter", "ObjectAnnotation", "TMP_PREFIX", "check_augmentations", "coco_document", "image_name",
           "image_to_array", "open_dataset", "parse_augmentations", "write_files"]
