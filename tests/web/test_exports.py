"""Exports GIS tools open as they are: GeoPackage, FlatGeobuf, CSV with WKT, plain GeoJSON,
each read back with GDAL (pyogrio) for its feature count, layer, CRS and field types."""

from __future__ import annotations

import csv
import io
import os
import tempfile
from pathlib import Path

import pytest

from tests.web.conftest import Seed

pyogrio = pytest.importorskip("pyogrio", reason="pip install pyogrio (the web extra)")

DETECTION_TYPES = {
    "id": "OFTInteger64",
    "photo_id": "OFTInteger",
    "label": "OFTString",
    "supercategory": "OFTString",
    "score": "OFTReal",
    "box_x1": "OFTReal",
    "box_y1": "OFTReal",
    "box_x2": "OFTReal",
    "box_y2": "OFTReal",
    "model_version": "OFTString",
    "taken_at": "OFTDateTime",
    "taken_at_offset": "OFTString",
}
PHOTO_TYPES = {
    "id": "OFTInteger",
    "status": "OFTString",
    "taken_at": "OFTDateTime",
    "taken_at_offset": "OFTString",
    "width": "OFTInteger",
    "height": "OFTInteger",
    "detections": "OFTInteger",
}


def _export(client, token: str, kind: str, tmp_path: Path, fmt: str, **query: str) -> Path:  # type: ignore[no-untyped-def]
    response = client.get(
        f"/api/v1/exports/{kind}",
        query_string={**query, "format": fmt},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    assert response.headers["Content-Disposition"] == f'attachment; filename="{kind}.{fmt}"'
    path = tmp_path / f"{kind}-{len(query)}.{fmt}"
    path.write_bytes(response.get_data())
    return path


def _types(info: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return dict(zip(info["fields"], info["ogr_types"], strict=True))


@pytest.mark.parametrize("fmt", ["gpkg", "fgb"])
def test_gis_files_hold_every_row_as_typed_fields(
    client, seeded: Seed, staff_token, tmp_path, fmt
) -> None:  # type: ignore[no-untyped-def]
    before = set(os.listdir(tempfile.gettempdir()))
    for kind, types, expected in (
        ("detections", DETECTION_TYPES, [d for d in seeded.detections if d.photo.lat is not None]),
        ("photos", PHOTO_TYPES, [p for p in seeded.photos if p.lat is not None]),
    ):
        path = _export(client, staff_token, kind, tmp_path, fmt)
        assert pyogrio.list_layers(path)[:, 0].tolist() == [kind]
        info = pyogrio.read_info(path, layer=kind)
        assert info["features"] == len(expected)
        assert info["crs"] == "EPSG:4326"
        assert info["geometry_type"] == "Point"
        assert _types(info) == types
        meta, _fids, geometry, columns = pyogrio.raw.read(path, layer=kind)
        values = dict(zip(meta["fields"], columns, strict=True))
        by_id = {int(i): n for n, i in enumerate(values["id"])}
        assert set(by_id) == {e.id for e in expected}
        for e in expected:
            n = by_id[e.id]
            # WKB point, little-endian: lon, lat as doubles after the 5-byte header.
            lon, lat = memoryview(geometry[n])[5:21].cast("d").tolist()
            photo = e.photo if kind == "detections" else e
            assert (lon, lat) == (photo.lon, photo.lat)
            if kind == "detections":
                assert values["label"][n] == e.label
                assert values["score"][n] == pytest.approx(e.score)
                assert values["model_version"][n] == e.model
            if photo.taken_at is None:
                assert str(values["taken_at"][n]) == "NaT"
            else:
                assert values["taken_at"][n].astype("datetime64[s]").item() == photo.taken_at
    assert set(os.listdir(tempfile.gettempdir())) == before  # no temporary files left


@pytest.mark.parametrize("fmt", ["gpkg", "fgb"])
def test_an_empty_gis_export_is_a_valid_file(client, seeded, staff_token, tmp_path, fmt) -> None:  # type: ignore[no-untyped-def]
    path = _export(client, staff_token, "detections", tmp_path, fmt, label="No such label")
    # An empty FlatGeobuf header leaves the count unknown (-1) until the features are read.
    info = pyogrio.read_info(path, layer="detections", force_feature_count=True)
    assert info["features"] == 0
    assert _types(info) == DETECTION_TYPES


def test_filters_apply_to_gis_exports(client, seeded: Seed, staff_token, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = _export(client, staff_token, "detections", tmp_path, "gpkg", min_score="0.5")
    _meta, _fids, _geometry, (ids, *_rest) = pyogrio.raw.read(path, columns=["id"])
    assert sorted(ids.tolist()) == sorted(
        d.id for d in seeded.detections if d.photo.lat is not None and d.score >= 0.5
    )


def test_csv_carries_a_wkt_geometry_gdal_reads(client, seeded: Seed, staff_token, tmp_path) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/api/v1/detections", query_string={"format": "csv", "limit": 10_000})
    text = response.get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(text)))
    header = text.splitlines()[0].split(",")
    assert header[header.index("lat") + 1] == "WKT"
    for row in rows:
        assert row["WKT"] == f"POINT ({float(row['lon'])!r} {float(row['lat'])!r})"
    path = _export(client, staff_token, "detections", tmp_path, "csv")
    # GDAL's CSV driver takes a column named WKT as the geometry with no options.
    info = pyogrio.read_info(path, AUTODETECT_TYPE="YES")
    assert info["features"] == len(rows)
    assert info["geometry_type"] in ("Unknown", "Point")
    types = _types(info)
    assert types["score"] == "OFTReal" and types["box_x1"] == "OFTReal"
    assert types["photo_id"] == "OFTInteger" and types["label"] == "OFTString"
    _meta, _fids, geometry, _columns = pyogrio.raw.read(path, AUTODETECT_TYPE="YES")
    first = rows[0]
    assert memoryview(geometry[0])[5:21].cast("d").tolist() == [
        float(first["lon"]),
        float(first["lat"]),
    ]


def test_geojson_box_is_four_numeric_properties(
    client, seeded: Seed, staff_token, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    body = client.get("/api/v1/detections", query_string={"limit": 10_000}).get_json()
    by_id = {d.id: d for d in seeded.detections}
    for f in body["features"]:
        props = f["properties"]
        assert "bbox" not in props  # RFC 7946 reserves that member
        box = [props[k] for k in ("box_x1", "box_y1", "box_x2", "box_y2")]
        assert all(isinstance(v, float) for v in box)
        assert box[0] < box[2] and box[1] < box[3]
        assert f["id"] in by_id
    path = _export(client, staff_token, "detections", tmp_path, "geojson")
    info = pyogrio.read_info(path)
    assert info["features"] == len(body["features"])
    types = _types(info)
    assert all(types[k] == "OFTReal" for k in ("box_x1", "box_y1", "box_x2", "box_y2"))
    assert "bbox" not in types


def test_unknown_export_format_is_a_400(client, staff_token) -> None:  # type: ignore[no-untyped-def]
    response = client.get(
        "/api/v1/exports/photos",
        query_string={"format": "shp"},
        headers={"Authorization": f"Bearer {staff_token}"},
    )
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "invalid_format"
    listed = client.get("/api/v1/detections", query_string={"format": "gpkg"})
    assert listed.status_code == 400  # the paged lists stay GeoJSON / CSV
