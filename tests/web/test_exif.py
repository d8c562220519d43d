"""EXIF parsing against the real photos' manifest, and property tests on malformed GPS."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.conftest import manifest
from trashmap.exif import coordinate_problem, parse_gps, read_exif

ROWS = manifest()


@pytest.mark.parametrize("row", ROWS, ids=[r.file for r in ROWS])
def test_exif_position_matches_manifest(row) -> None:  # type: ignore[no-untyped-def]
    info = read_exif(row.path.read_bytes())
    if row.lat is None:
        assert info.geotag is None
        return
    assert info.geotag is not None, info.warnings
    assert info.geotag.lat == pytest.approx(row.lat, abs=1e-6)
    assert info.geotag.lon == pytest.approx(row.lon, abs=1e-6)
    if row.alt is not None:
        assert info.geotag.alt == pytest.approx(row.alt, abs=0.01)
        assert math.copysign(1, info.geotag.alt) == math.copysign(1, row.alt)


def test_malformed_gps_becomes_a_warning_not_an_error() -> None:
    by_name = {r.file: r for r in ROWS}
    for name, expected in [
        ("exifr__test_fixtures_broken1.jpg", "zero denominator"),
        ("goexif-rwcarlsen__exif_samples_geodegrees_as_string.jpg", "stored as text"),
        ("exifsamples__jpg_Canon_40D.jpg", "without coordinates"),
    ]:
        info = read_exif(by_name[name].path.read_bytes())
        assert info.geotag is None
        assert any(expected in w for w in info.warnings), info.warnings


def test_offset_time_original_is_kept() -> None:
    info = read_exif((ROWS[0].path.parent / "exiftool__t_images_Google.jpg").read_bytes())
    assert info.taken_at is not None and info.taken_at.isoformat() == "2023-10-06T22:53:51"
    assert info.taken_at_offset == "+02:00"


class _Tag:
    """The shape of an exifread tag: `.values` and `.printable`."""

    def __init__(self, values) -> None:  # type: ignore[no-untyped-def]
        self.values = values
        self.printable = str(values[0]) if isinstance(values, list) and values else str(values)


class _Ratio:
    def __init__(self, num: int, den: int) -> None:
        self.num, self.den = num, den


def _gps_tags(lat_values, lon_values, lat_ref="N", lon_ref="E"):  # type: ignore[no-untyped-def]
    return {
        "GPS GPSLatitude": _Tag(lat_values),
        "GPS GPSLongitude": _Tag(lon_values),
        "GPS GPSLatitudeRef": _Tag(lat_ref),
        "GPS GPSLongitudeRef": _Tag(lon_ref),
    }


def test_null_island_one_value_and_out_of_range_are_no_location() -> None:
    cases = [
        _gps_tags([Fraction(0)] * 3, [Fraction(0)] * 3),
        _gps_tags([Fraction(45)], [Fraction(7), Fraction(0), Fraction(0)]),
        _gps_tags(
            [Fraction(95), Fraction(0), Fraction(0)], [Fraction(7), Fraction(0), Fraction(0)]
        ),
        _gps_tags([_Ratio(1, 0)] * 3, [Fraction(7), Fraction(0), Fraction(0)]),
    ]
    for tags in cases:
        warnings: list[str] = []
        assert parse_gps(tags, warnings) is None
        assert len(warnings) == 1


def test_southern_and_western_refs_are_negative() -> None:
    dms = [Fraction(10), Fraction(30), Fraction(0)]
    geotag = parse_gps(_gps_tags(dms, dms, "S", "W"), [])
    assert geotag is not None and geotag.lat == -10.5 and geotag.lon == -10.5


_part = st.one_of(
    st.builds(_Ratio, st.integers(-(10**9), 10**9), st.integers(-5, 10**6)),
    st.fractions(min_value=-1000, max_value=1000),
    st.text(max_size=5),
    st.floats(allow_nan=True, allow_infinity=True),
)
_values = st.one_of(st.lists(_part, max_size=4), st.text(max_size=20), st.binary(max_size=8))


@given(_values, _values, st.sampled_from(["N", "S", "", "X"]), st.sampled_from(["E", "W", ""]))
def test_any_gps_values_give_a_valid_position_or_a_warning(lat, lon, lat_ref, lon_ref) -> None:  # type: ignore[no-untyped-def]
    warnings: list[str] = []
    geotag = parse_gps(_gps_tags(lat, lon, lat_ref, lon_ref), warnings)
    if geotag is None:
        assert warnings
    else:
        assert coordinate_problem(geotag.lat, geotag.lon) is None
        assert not warnings


@given(st.binary(max_size=2048))
def test_read_exif_never_raises_on_garbage(data: bytes) -> None:
    info = read_exif(b"\xff\xd8\xff\xe1" + data)
    assert info.geotag is None or coordinate_problem(info.geotag.lat, info.geotag.lon) is None
