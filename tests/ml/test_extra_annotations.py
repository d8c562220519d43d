"""`--extra-annotations`: a second COCO file (e.g. `trashmap dataset export`) merged into the
training file: categories matched by name, images whole, `train` and `cv` both take it."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ml.categories import load_class_set
from ml.cli import ml
from ml.data import TacoDataset
from ml.data.coco_file import read_coco, read_training_coco
from ml.splits import make_folds
from ml.synthetic import ShapesSpec, make_shapes_dataset
from tests.ml.test_cross_validate import TINY


def _export_like(root: Path) -> Path:
    """A shapes set laid out as the export is: annotations.json beside images/, one extra
    category ("litter") the base file lacks, and ids that collide with the base file's."""
    path = make_shapes_dataset(root, ShapesSpec(images=6, seed=11, folder="images"))
    data = json.loads(path.read_text())
    data["categories"].append({"id": 99, "name": "litter", "supercategory": "litter"})
    data["annotations"][0]["category_id"] = 99
    path.write_text(json.dumps(data))
    return path


def test_merge_matches_categories_by_name_and_keeps_images_whole(
    shapes: Path, tmp_path: Path
) -> None:
    extra = _export_like(tmp_path / "export")
    base = read_coco(shapes / "annotations.json")
    merged = read_training_coco(shapes / "annotations.json", extra)
    extra_data = read_coco(extra)
    assert len(merged["images"]) == len(base["images"]) + len(extra_data["images"])
    assert len(merged["annotations"]) == len(base["annotations"]) + len(extra_data["annotations"])
    assert len({i["id"] for i in merged["images"]}) == len(merged["images"])
    assert len({a["id"] for a in merged["annotations"]}) == len(merged["annotations"])
    names = [c["name"] for c in merged["categories"]]
    assert names == [c["name"] for c in base["categories"]] + ["litter"]
    # Each extra image keeps all its boxes, under its new id, with the category of its name.
    extra_names = {c["id"]: c["name"] for c in extra_data["categories"]}
    merged_names = {c["id"]: c["name"] for c in merged["categories"]}
    offset = max(i["id"] for i in base["images"])
    for image in extra_data["images"]:
        want = sorted(
            (extra_names[a["category_id"]], a["bbox"])
            for a in extra_data["annotations"]
            if a["image_id"] == image["id"]
        )
        got = sorted(
            (merged_names[a["category_id"]], a["bbox"])
            for a in merged["annotations"]
            if a["image_id"] == image["id"] + offset
        )
        assert got == want
    # Extra file names resolve under the extra file's folder, so one dataset reads both.
    class_set = load_class_set("all", merged["categories"])
    dataset = TacoDataset(merged, shapes, class_set)
    last = len(dataset) - 1
    assert dataset.image_path(last).is_relative_to((tmp_path / "export").resolve())
    image, target = dataset[last]
    assert image.shape[0] == 3 and len(target["boxes"]) >= 1
    # Folds split by image: every merged image is in exactly one test fold.
    folds = make_folds(merged, class_set, 3, seed=1, val_fraction=0.2)
    tested = [i for fold in folds for i in fold.test]
    assert sorted(tested) == sorted(i["id"] for i in merged["images"])


def test_cv_takes_the_extra_annotations_into_its_folds(shapes: Path, tmp_path: Path) -> None:
    extra = _export_like(tmp_path / "export")
    out = tmp_path / "cv"
    common = ["--annotations", str(shapes / "annotations.json"), "--images", str(shapes)]
    result = CliRunner().invoke(
        ml,
        ["cv", *common, "--out", str(out), "--folds", "2", "--fold", "0",
         "--extra-annotations", str(extra), *TINY],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    tests = [
        json.loads((out / "folds" / f"fold_{k}" / "test.json").read_text())["images"]
        for k in (0, 1)
    ]
    everything = [i["file_name"] for fold in tests for i in fold]
    assert len(everything) == 12 + 6 and len(set(everything)) == 18
    assert (out / "fold_0" / "best.pt").is_file()
