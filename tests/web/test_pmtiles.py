"""`trashmap export pmtiles`: the archive decodes (pmtiles reader + mapbox-vector-tile)."""

from __future__ import annotations

import gzip
from pathlib import Path

import mapbox_vector_tile
from click.testing import CliRunner
from pmtiles.reader import MmapSource, Reader, all_tiles
from pmtiles.tile import Compression, TileType

from tests.conftest import embedded_settings, settings_env
from tests.web.test_tiles import tile_of
from trashmap import migrate
from trashmap.cli import cli
from web.query.tiles import DETAIL_ZOOM, LAYER

PARIS = (48.8566, 2.3522)


def _export(settings, out: Path, *args: str):  # type: ignore[no-untyped-def]
    env = settings_env(settings)
    return CliRunner().invoke(cli, ["export", "pmtiles", "--out", str(out), *args], env=env)


def _features(reader: Reader, z: int, x: int, y: int) -> list[dict]:  # type: ignore[type-arg]
    data = reader.get(z, x, y)
    if data is None:
        return []
    layers = mapbox_vector_tile.decode(gzip.decompress(data))
    return layers[LAYER]["features"]


def test_archive_holds_the_detections_at_two_zooms(pg_settings, seeded, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "detections.pmtiles"
    result = _export(pg_settings, out, "--max-zoom", str(DETAIL_ZOOM))
    assert result.exit_code == 0, result.output
    assert "wrote" in result.output
    with out.open("rb") as f:
        reader = Reader(MmapSource(f))
        header = reader.header()
        assert header["tile_type"] == TileType.MVT
        assert header["tile_compression"] == Compression.GZIP
        assert (header["min_zoom"], header["max_zoom"]) == (0, DETAIL_ZOOM)
        layer = reader.metadata()["vector_layers"][0]
        assert layer["id"] == LAYER and "count" in layer["fields"] and "id" in layer["fields"]

        located = [d for d in seeded.detections if d.photo.lat is not None]
        # Zoom 0: one tile, clusters whose counts add up to every positioned detection.
        world = _features(reader, 0, 0, 0)
        assert sum(f["properties"]["count"] for f in world) == len(located) > 0

        # DETAIL_ZOOM: one point per detection; over all tiles each detection appears, and
        # the tile that holds a photo's position holds all of its detections.
        ids: set[int] = set()
        for (z, x, y), _ in all_tiles(reader.get_bytes):
            if z == DETAIL_ZOOM:
                ids |= {f["properties"]["id"] for f in _features(reader, z, x, y)}
        assert ids == {d.id for d in located}
        anchor = located[0]
        x, y = tile_of(anchor.photo.lat, anchor.photo.lon, DETAIL_ZOOM)
        here = {f["properties"]["id"] for f in _features(reader, DETAIL_ZOOM, x, y)}
        assert {d.id for d in located if d.photo == anchor.photo} <= here


def test_filters_apply_to_the_archive(pg_settings, seeded, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "cans.pmtiles"
    result = _export(pg_settings, out, "--max-zoom", "4", "--label", "Drink can")
    assert result.exit_code == 0, result.output
    cans = [d for d in seeded.detections if d.photo.lat is not None and d.label == "Drink can"]
    with out.open("rb") as f:
        reader = Reader(MmapSource(f))
        x, y = tile_of(*PARIS, 4)
        paris = _features(reader, 4, x, y)
        expected = [d for d in cans if abs(d.photo.lat - PARIS[0]) < 1]
        assert sum(f["properties"]["count"] for f in paris) == len(expected) > 0
        assert {f["properties"]["label"] for f in paris} == {"Drink can"}


def test_bad_filters_and_sqlite_are_refused_in_one_line(pg_settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = _export(pg_settings, tmp_path / "x.pmtiles", "--supercategory", "Spaceship")
    assert result.exit_code == 2
    assert "supercategory must be one of" in result.output
    settings = embedded_settings(tmp_path)
    migrate.upgrade(settings)
    result = _export(settings, tmp_path / "y.pmtiles")
    assert result.exit_code == 2
    assert "PostGIS" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "y.pmtiles").exists()
