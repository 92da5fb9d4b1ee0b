"""Importers: turn what users have (image/mask folders, COCO, BBBC041 malaria, BraTS) into msgnet datasets.

Each format module turns its input into :class:`~msgnet.data.importers.common.Source` objects
(one per source image or patient, decoded lazily); :func:`~msgnet.data.importers.common.write_import`
applies the geometry (resize / centre-crop / tile), splits by source and writes atomically.
"""

from msgnet.data.importers.common import Geometry, ImportReport, Sample, Source, write_import

__all__ = ["Geometry", "ImportReport", "Sample", "Source", "write_import"]
