"""The fast inference path finds what one-photo-at-a-time prediction finds."""

from __future__ import annotations

import pytest

from ml.detector import Detector
from ml.inference import BatchPredictor, group_by_shape, padded_shape
from tests.conftest import PHOTOS_DIR
from tests.worker.conftest import SMALL_SIZES, small_detector
from trashmap.imaging import decode_oriented

# Landscape and portrait photos of several sizes, so batches hold several shape groups.
NAMES = [
    "exifsamples__jpg_gps_DSCN0010.jpg",
    "exifsamples__jpg_gps_DSCN0012.jpg",
    "exifsamples__jpg_gps_DSCN0021.jpg",
    "exifsamples__jpg_orientation_landscape_6.jpg",
    "exifsamples__jpg_orientation_portrait_8.jpg",
    "exiftool__t_images_GPS.jpg",
]


@pytest.fixture(scope="module")
def detector() -> Detector:
    return small_detector(3)  # type: ignore[no-any-return]


def test_a_batch_finds_the_same_boxes_as_one_photo_at_a_time(detector: Detector) -> None:
    images = [decode_oriented((PHOTOS_DIR / n).read_bytes(), detector.input_size)[0] for n in NAMES]
    single = [detector.predict([image], 0.05, 20)[0] for image in images]
    batched = BatchPredictor(detector, max_batch=8, precision="fp32").predict(images, 0.05, 20)
    assert len(group_by_shape([(i.height, i.width) for i in images], *SMALL_SIZES, 8)) < len(
        images
    ), "the photos should share shapes, or nothing was batched"
    assert sum(len(found) for found in single) > 0, "no detections: the comparison is empty"
    for one, many in zip(single, batched, strict=True):
        assert len(one) == len(many)
        for a, b in zip(one, many, strict=True):
            assert a.label == b.label
            assert a.score == pytest.approx(b.score, abs=1e-3)
            assert a.box == pytest.approx(b.box, abs=0.05)


def test_shape_groups_never_mix_padded_shapes() -> None:
    sizes = [(768, 1024), (3000, 4000), (1024, 768), (600, 800), (480, 641), (1000, 1000)]
    groups = group_by_shape(sizes, 320, 512, max_batch=2)
    for group in groups:
        assert len(group) <= 2
        assert len({padded_shape(*sizes[i], 320, 512) for i in group}) == 1
    assert sorted(i for g in groups for i in g) == list(range(len(sizes)))
