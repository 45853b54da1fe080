"""Which batches are image files, and reading them as a manifest the gate can judge file by file."""

from __future__ import annotations

from pathlib import Path

from normlab.config import DataConfig
from normlab.errors import DataSourceError
from normlab.images.scan import Manifest, is_image_folder, scan_folder, scan_table


def is_image_source(data: DataConfig, path: str | None) -> bool:
    """Whether the batch at ``path`` (or ``data.path``) is image files: a folder, or a table with ``data.image_column``."""
    path = path or data.path
    return bool(path) and (is_image_folder(path) or data.image_column is not None)


def read_images(data: DataConfig, path: str) -> Manifest:
    """Scan an image folder, or the files a table names (``data.image_column``).

    Raises:
        DataSourceError: ``data.image_shape`` is not set (what the images are resized to), or the scan fails.
    """
    from normlab.data.sources import read_table

    if data.image_shape is None:
        raise DataSourceError(
            f"{path!r} holds image files: set data.image_shape, the (H, W) they are resized to, e.g. [32, 32]"
        )
    if is_image_folder(path):
        return scan_folder(path, label=data.label)
    return scan_table(read_table(path), Path(path), column=str(data.image_column), label=data.label)
