"""Detection data: COCO/TACO files, the dataset, and aspect-ratio grouped batches."""

from ml.data.sampler import GroupedBatchSampler
from ml.data.taco import ImageRecord, TacoDataset, collate

__all__ = ["GroupedBatchSampler", "ImageRecord", "TacoDataset", "collate"]
