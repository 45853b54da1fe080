"""Data sources, fingerprints, splits, shifts and encoders (pure functions, no I/O at import)."""

from normlab.data.encoding import NA_CATEGORY, FeatureEncoder, LabelEncoder
from normlab.data.fingerprint import fingerprint_frame, row_hashes
from normlab.data.shifts import CORRUPTIONS, SEVERITIES, corrupt_images, corruption_name
from normlab.data.sources import BUILTIN_DATASETS, image_shape_of, load_builtin, read_table
from normlab.data.splits import (
    SPLIT_NAMES,
    assign_id_splits,
    ood_mask_column,
    ood_mask_quantile,
    ood_mask_time,
)

__all__ = [
    "BUILTIN_DATASETS",
    "CORRUPTIONS",
    "NA_CATEGORY",
    "SEVERITIES",
    "SPLIT_NAMES",
    "FeatureEncoder",
    "LabelEncoder",
    "assign_id_splits",
    "corrupt_images",
    "corruption_name",
    "fingerprint_frame",
    "image_shape_of",
    "load_builtin",
    "ood_mask_column",
    "ood_mask_quantile",
    "ood_mask_time",
    "read_table",
    "row_hashes",
]
