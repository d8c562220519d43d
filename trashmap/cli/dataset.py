"""`trashmap dataset export`: the verified photos as a COCO training set in a folder."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import click

from trashmap.cli.operations import _bbox


@click.group()
def dataset() -> None:
    """Training data made from reviewed photos."""


@dataset.command("export")
@click.option(
    "--out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for annotations.json and images/ (created; must be empty).",
)
@click.option("--since", type=click.DateTime(), help="Photos taken at or after (camera time).")
@click.option("--until", type=click.DateTime(), help="Photos taken before (camera time).")
@click.option("--bbox", callback=_bbox, help="Only photos inside WEST,SOUTH,EAST,NORTH.")
@click.option(
    "--label",
    "labels",
    multiple=True,
    help="Only photos with a box of this label, and only those boxes; repeat for several.",
)
@click.option(
    "--classes",
    default=None,
    help="A shipped class set (taco15, taco10, supercategories, litter): its classes are the "
    "categories and each box is mapped onto one (default: the labels reviewers used).",
)
def export(
    out: Path,
    since: datetime | None,
    until: datetime | None,
    bbox: tuple[float, float, float, float] | None,
    labels: tuple[str, ...],
    classes: str | None,
) -> None:
    """Write OUT/annotations.json (COCO, boxes xywh) and OUT/images/<id>.jpg (upright,
    no metadata): `trashmap ml train --annotations OUT/annotations.json --images OUT
    --classes all` takes it as it is."""
    from trashmap.cli.preflight import migrated_settings
    from trashmap.dataset import (
        ANNOTATIONS_FILE,
        DatasetError,
        DatasetFilter,
        build_coco,
        image_files,
    )
    from trashmap.db import make_engine, make_session_factory
    from trashmap.storage import open_storage

    if out.exists() and any(out.iterdir()):
        raise click.ClickException(f"{out} is not empty")
    flt = DatasetFilter(since, until, bbox, tuple(sorted(set(labels))), classes)
    settings = migrated_settings()
    sessions = make_session_factory(make_engine(settings))
    store = open_storage(settings)
    with sessions() as session:
        try:
            document, images = build_coco(session, flt)
        except DatasetError as exc:
            raise click.ClickException(str(exc)) from None
        out.mkdir(parents=True, exist_ok=True)
        for name, data in image_files(session, document, images, store):
            path = out / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    (out / ANNOTATIONS_FILE).write_text(json.dumps(document, indent=1))
    click.echo(
        f"exported {len(document['images'])} photos, {len(document['annotations'])} boxes, "
        f"{len(document['categories'])} categories into {out}"
    )
