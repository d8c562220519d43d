"""Map API benchmark: 1 000 000 clustered detections in PostGIS, API latency vs baselines.

    python bench/map_bench.py [--url postgresql+psycopg2://postgres@127.0.0.1:5432/trashmap_bench]
                              [--detections 1000000] [--runs 50] [--json bench/map_bench.json]
                              [--reuse] [--tiles-only]

Recreates the database named in --url (--reuse keeps one an earlier run seeded, after
migrating it), seeds it in SQL (generate_series), then times each endpoint through the
Flask app (parsing, SQL, serialisation) and the same question answered naively (every row
read into Python and filtered there) in the same run, and the vector tiles at zooms 4, 8,
12 and 14 against the query Martin or pg_tileserv runs on the detections table (one
ST_AsMVT(ST_AsMVTGeom(...)) over every point in the tile). Prints markdown tables of
p50/p95 and writes the numbers as JSON (--tiles-only: the tile table alone).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import mapbox_vector_tile
import requests
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from tqdm import tqdm
from werkzeug.serving import make_server

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trashmap import migrate  # noqa: E402
from trashmap.settings import Settings  # noqa: E402
from web import create_app  # noqa: E402
from web.query.filters import MapFilter  # noqa: E402
from web.query.tiles import LAYER, build_tile, store_key  # noqa: E402

LABELS = [
    "Clear plastic bottle",
    "Drink can",
    "Cigarette",
    "Plastic film",
    "Glass bottle",
    "Other plastic wrapper",
    "Plastic bottle cap",
    "Pop tab",
]
CITIES = 300
PER_PHOTO = 5

SEED_SQL = """
SELECT setseed(0.42);
CREATE TABLE bench_cities AS
  SELECT c AS id, -50 + random() * 110 AS lat, -180 + random() * 360 AS lon,
         0.01 + random() * 0.08 AS spread
  FROM generate_series(0, :cities - 1) AS c;
INSERT INTO model_versions (name, version, arch, class_names, active, created_at)
  VALUES ('bench', '1', 'fasterrcnn', '[]', true, now());
DROP INDEX IF EXISTS ix_photos_geom;
DROP INDEX IF EXISTS ix_detections_geom;
DROP INDEX IF EXISTS ix_detections_pt;
-- Zipf-like city sizes (power of a uniform), gaussian spread around each city, and one
-- photo in ten anywhere on land-ish latitudes.
INSERT INTO photos (sha256, content_type, byte_size, width, height, orientation, lat, lon,
                    taken_at, warnings, status, attempts, model_version_id, created_at,
                    updated_at)
SELECT md5(g::text) || md5((g + 1)::text), 'image/jpeg', 1000, 4000, 3000, 1,
       greatest(-89.9, least(89.9, CASE WHEN p.noise THEN -55 + random() * 125
            ELSE c.lat + c.spread * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) END)),
       greatest(-179.9, least(179.9, CASE WHEN p.noise THEN -180 + random() * 360
            ELSE c.lon + c.spread * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) END)),
       timestamp '2024-01-01' + random() * interval '365 days', '[]', 'done', 1, 1, now(), now()
FROM generate_series(1, :photos) AS g
CROSS JOIN LATERAL (SELECT floor(power(random(), 3) * :cities)::int AS city,
                           random() < 0.1 AS noise, g AS gg) AS p
JOIN bench_cities c ON c.id = p.city;
INSERT INTO detections (photo_id, model_version_id, label, score, x1, y1, x2, y2, lat, lon,
                        created_at)
SELECT p.id, 1, (:labels)[1 + floor(random() * :nlabels)::int], random(), 100, 100, 300, 300,
       p.lat, p.lon, now()
FROM photos p CROSS JOIN generate_series(1, :per_photo);
CREATE INDEX ix_photos_geom ON photos USING gist (geom);
CREATE INDEX ix_detections_geom ON detections USING gist (geom);
CREATE INDEX ix_detections_pt ON detections USING spgist (pt)
  INCLUDE (id, photo_id, model_version_id, label, score, lat, lon);
-- The insert's triggers left the grid counts and tile changes as deltas, which a worker
-- would fold.
SELECT trashmap_fold_grid_counts();
SELECT trashmap_fold_tile_changes();
"""
# What Martin or pg_tileserv serve from the detections table: every point in the tile.
MARTIN_SQL = """
SELECT ST_AsMVT(t, 'detections') FROM (
  SELECT id, label, score,
         ST_AsMVTGeom(ST_Transform(geom, 3857), ST_TileEnvelope(%(z)s, %(x)s, %(y)s)) AS geom
  FROM detections WHERE geom && ST_Transform(ST_TileEnvelope(%(z)s, %(x)s, %(y)s), 4326)) t
"""
TILE_ZOOMS = (4, 8, 12, 14)


def recreate(url: str) -> None:
    parsed = make_url(url)
    admin = sa.create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
        conn.execute(sa.text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


def seed(engine: sa.Engine, detections: int) -> None:
    """Seed the rows (and bench_cities, the centres they cluster around)."""
    photos = detections // PER_PHOTO
    params = {
        "cities": CITIES,
        "photos": photos,
        "labels": LABELS,
        "nlabels": len(LABELS),
        "per_photo": PER_PHOTO,
    }
    with engine.begin() as conn:
        for statement in filter(str.strip, SEED_SQL.split(";")):
            used = {k: v for k, v in params.items() if f":{k}" in statement}
            conn.execute(sa.text(statement), used)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        for table in ("photos", "detections", "grid_counts", "grid_count_deltas", "tile_changes"):
            conn.execute(sa.text(f"VACUUM ANALYZE {table}"))


def densest_cities(engine: sa.Engine) -> list[tuple[float, float]]:
    """The centres of the densest cities, biggest first (the seed's Zipf-like sizes)."""
    with engine.connect() as conn:
        top = conn.execute(sa.text("SELECT lat, lon FROM bench_cities ORDER BY id LIMIT 10"))
        return [(float(row.lat), float(row.lon)) for row in top]


def tile_of(lat: float, lon: float, z: int) -> tuple[int, int]:
    n = 2**z
    return (
        int((lon + 180) / 360 * n),
        int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n),
    )


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    n = 2**z

    def lat(yy: int) -> float:
        return math.degrees(math.atan(math.sinh(math.pi * (1 - 2 * yy / n))))

    return x / n * 360 - 180, lat(y + 1), (x + 1) / n * 360 - 180, lat(y)


def city_bbox(lat: float, lon: float, half: float = 0.1) -> tuple[float, float, float, float]:
    return lon - half, lat - half, lon + half, lat + half


def timed(fn: Callable[[int], object], runs: int, warmup: int = 3) -> list[float]:
    for i in range(warmup):
        fn(i)
    out = []
    for i in range(runs):
        start = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - start) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


class Naive:
    """The baseline: read every positioned detection, filter and aggregate in Python."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def rows(self) -> list[sa.Row]:  # type: ignore[type-arg]
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    sa.text(
                        "SELECT d.id, d.photo_id, d.lat, d.lon, d.label, d.score, d.x1, d.y1, "
                        "d.x2, d.y2, p.taken_at FROM detections d "
                        "JOIN photos p ON p.id = d.photo_id "
                        "WHERE d.lat IS NOT NULL ORDER BY d.id"
                    )
                ).all()
            )

    def page(self, box: tuple[float, float, float, float]) -> int:
        hits = [r for r in self.rows() if box[0] <= r.lon <= box[2] and box[1] <= r.lat <= box[3]]
        features = [
            {
                "type": "Feature",
                "id": r.id,
                "geometry": {"type": "Point", "coordinates": [r.lon, r.lat]},
                "properties": {"label": r.label, "score": r.score},
            }
            for r in hits[:1000]
        ]
        return len(json.dumps({"numberMatched": len(hits), "features": features}))

    def grid(self, cell: float, box: tuple[float, float, float, float] | None) -> int:
        counts: dict[tuple[int, int], int] = {}
        for r in self.rows():
            if box and not (box[0] <= r.lon <= box[2] and box[1] <= r.lat <= box[3]):
                continue
            key = (math.floor(r.lon / cell), math.floor(r.lat / cell))
            counts[key] = counts.get(key, 0) + 1
        return len(json.dumps([[k[0], k[1], v] for k, v in counts.items()]))

    def tile(self, z: int, x: int, y: int) -> int:
        west, south, east, north = tile_bounds(z, x, y)
        feats = []
        for r in self.rows():
            if west <= r.lon <= east and south <= r.lat <= north:
                px, py = tile_px(r.lat, r.lon, z, x, y)
                feats.append(
                    {"geometry": f"POINT({px} {py})", "properties": {"id": r.id, "label": r.label}}
                )
        return len(
            mapbox_vector_tile.encode(
                [{"name": "detections", "features": feats}], default_options={"y_coord_down": True}
            )
        )


def tile_px(lat: float, lon: float, z: int, x: int, y: int) -> tuple[float, float]:
    n = 2**z
    fx = (lon + 180) / 360 * n
    fy = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n
    return (fx - x) * 4096, (fy - y) * 4096


def tile_table(
    app: Any, engine: sa.Engine, cities: list[tuple[float, float]], runs: int
) -> list[dict[str, object]]:
    """Tiles over the densest cities at TILE_ZOOMS: trashmap against the Martin-style SQL.

    Tile bytes: the Martin-style SQL through a bare psycopg2 cursor against trashmap's
    tile statement (build_tile: what a tile neither cache holds costs) through a
    SQLAlchemy session. The API: GET through the Flask test client, cold (the process
    cache emptied first, so every request reads the tile store: one statement), built
    (the tile store emptied too, so every request builds and stores its tile) and cached
    (the process cache validated by the one signature query), and cached over HTTP
    (werkzeug, keep-alive).
    """
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    raw = engine.raw_connection()
    try:
        bench = TileBench(app, raw, f"http://127.0.0.1:{server.server_port}")
        rows = []
        for z in TILE_ZOOMS:
            rows.append(bench.row(z, [(z, *tile_of(lat, lon, z)) for lat, lon in cities], runs))
            print(f"zoom {z} measured", flush=True)
        return rows
    finally:
        server.shutdown()
        raw.close()


class TileBench:
    """The ways to get one tile that the tile table compares."""

    def __init__(self, app: Any, raw: Any, base_url: str) -> None:
        self.app, self.raw, self.base_url = app, raw, base_url
        self.cursor = raw.cursor()
        self.client = app.test_client()
        self.sessions = app.extensions["trashmap"].sessions
        self.http = requests.Session()
        self.tiles: list[tuple[int, int, int]] = []

    def _tile(self, i: int) -> tuple[int, int, int]:
        return self.tiles[i % len(self.tiles)]

    def martin(self, i: int) -> int:
        z, x, y = self._tile(i)
        self.cursor.execute(MARTIN_SQL, {"z": z, "x": x, "y": y})
        data = self.cursor.fetchone()[0]
        self.raw.commit()
        return len(bytes(data or b""))

    def trashmap_sql(self, i: int) -> int:
        with self.sessions() as session:
            _, data = build_tile(session, MapFilter(), *self._tile(i))
        return len(data)

    def api(self, i: int, cold: bool = False, built: bool = False) -> int:
        if built:  # timed too: a one-row delete, it only makes `built` look slower
            self.cursor.execute("SET LOCAL synchronous_commit = off")  # as the store's writes
            self.cursor.execute(
                "DELETE FROM tile_store WHERE key = %s", (store_key(*self._tile(i)),)
            )
            self.raw.commit()
        if cold or built:
            self.app.extensions.pop("tile_cache", None)
        response = self.client.get("/api/v1/tiles/{}/{}/{}.mvt".format(*self._tile(i)))
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        return len(response.data)

    def over_http(self, i: int) -> int:
        path = "/api/v1/tiles/{}/{}/{}.mvt".format(*self._tile(i))
        response = self.http.get(self.base_url + path)
        assert response.status_code == 200, response.text[:300]
        return len(response.content)

    def row(self, z: int, tiles: list[tuple[int, int, int]], runs: int) -> dict[str, object]:
        self.tiles = list(dict.fromkeys(tiles))
        features, points = [], []
        for t in self.tiles:
            data = self.client.get("/api/v1/tiles/{}/{}/{}.mvt".format(*t)).data
            features.append(
                len(mapbox_vector_tile.decode(data).get(LAYER, {"features": []})["features"])
            )
            self.cursor.execute(
                "SELECT count(*) FROM detections "
                "WHERE geom && ST_Transform(ST_TileEnvelope(%(z)s, %(x)s, %(y)s), 4326)",
                {"z": t[0], "x": t[1], "y": t[2]},
            )
            points.append(self.cursor.fetchone()[0])
        self.raw.commit()
        # Warm-up visits every tile once: the cached rows then time cache hits only.
        warmup = len(self.tiles)
        measured = {
            "martin_sql": timed(self.martin, runs, warmup),
            "trashmap_sql": timed(self.trashmap_sql, runs, warmup),
            "api_built": timed(lambda i: self.api(i, built=True), runs, warmup),
            "api_cold": timed(lambda i: self.api(i, cold=True), runs, warmup),
            "api_cached": timed(self.api, runs, warmup),
            "http_cached": timed(self.over_http, runs, warmup),
        }
        row: dict[str, object] = {
            "zoom": z,
            "tiles": len(self.tiles),
            "martin_points": max(points),
            "trashmap_features": max(features),
        }
        for name, values in measured.items():
            row[f"{name}_p50_ms"] = pct(values, 50)
            row[f"{name}_p95_ms"] = pct(values, 95)
        return row


def print_tile_table(rows: list[dict[str, Any]], runs: int) -> None:
    print(
        f"\nvector tiles over the 10 densest cities, {runs} runs each (p50 / p95 ms); "
        "Martin-style SQL and trashmap's tile statement as the time to build tile bytes "
        "(psycopg2 and a SQLAlchemy session), the API through the Flask test client (built: "
        "tile store and process cache emptied before each request; cold: process cache "
        "emptied, tile from the store) and over HTTP\n"
    )
    print(
        "| zoom | points (Martin) | features (trashmap) | Martin-style SQL | trashmap SQL, "
        "built | API, built | API, cold | API, cached | HTTP, cached |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        cells = " | ".join(
            f"{r[f'{k}_p50_ms']:.1f} / {r[f'{k}_p95_ms']:.1f}"
            for k in (
                "martin_sql",
                "trashmap_sql",
                "api_built",
                "api_cold",
                "api_cached",
                "http_cached",
            )
        )
        print(f"| z{r['zoom']} | {r['martin_points']} | {r['trashmap_features']} | {cells} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--url", default="postgresql+psycopg2://postgres@127.0.0.1:5432/trashmap_bench"
    )
    parser.add_argument("--detections", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=50, help="timed runs per API row")
    parser.add_argument("--baseline-runs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("bench/map_bench.json"))
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the database an earlier run seeded (migrated to the newest schema)",
    )
    parser.add_argument("--tiles-only", action="store_true", help="measure the tile table only")
    args = parser.parse_args()

    settings = replace(
        Settings.from_env(), database_url=args.url, rate_limit_enabled=False, broker_url="memory://"
    )
    started = time.perf_counter()
    if not args.reuse:
        recreate(args.url)
    migrate.upgrade(settings)
    app = create_app(settings)
    engine = app.extensions["trashmap"].engine
    if not args.reuse:
        seed(engine, args.detections)
    cities = densest_cities(engine)
    total = engine.connect().execute(sa.text("SELECT count(*) FROM detections")).scalar()
    rollup_rows, rollup_size = (
        engine.connect()
        .execute(
            sa.text(
                "SELECT count(*), pg_size_pretty(pg_total_relation_size('grid_counts')) "
                "FROM grid_counts"
            )
        )
        .one()
    )
    print(
        f"{'reused' if args.reuse else 'seeded'} {total} detections in "
        f"{time.perf_counter() - started:.0f} s; grid rollup: {rollup_rows} rows, {rollup_size}",
        flush=True,
    )

    gc.freeze()  # as each gunicorn worker does once it has loaded the app (web/server.py)
    tiles = tile_table(app, engine, cities, args.runs)
    print_tile_table(tiles, args.runs)
    report: dict[str, object] = {"detections": total, "runs": args.runs, "tiles": tiles}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    if not args.tiles_only:
        report["results"] = endpoint_table(app, engine, cities, args, total)
        args.json.write_text(json.dumps(report, indent=2))
    engine.dispose()


def endpoint_table(
    app: Any, engine: sa.Engine, cities: list[tuple[float, float]], args: Any, total: int
) -> list[dict[str, Any]]:
    """Pages, grids and a z12 tile through the API against the naive baseline."""
    client = app.test_client()
    naive = Naive(engine)
    boxes = [city_bbox(lat, lon) for lat, lon in cities]
    tiles = [(12, *tile_of(lat, lon, 12)) for lat, lon in cities]

    def get(url: str, query: dict[str, object]) -> int:
        response = client.get(url, query_string=query)
        assert response.status_code == 200, response.get_data(as_text=True)[:300]
        return len(response.data)

    def bbox_q(i: int) -> str:
        return ",".join(f"{v:.6f}" for v in boxes[i % len(boxes)])

    page_sizes = [
        client.get(
            "/api/v1/detections", query_string={"bbox": bbox_q(i), "limit": 1000}
        ).get_json()["numberReturned"]
        for i in range(len(boxes))
    ]
    rows = [
        (
            "city bbox, GeoJSON page of 1000",
            lambda i: get("/api/v1/detections", {"bbox": bbox_q(i), "limit": 1000}),
            lambda i: naive.page(boxes[i % len(boxes)]),
        ),
        (
            # The same keyset page through OGC API - Features (what QGIS and GDAL ask for).
            "city bbox, OGC API items page of 1000",
            lambda i: get("/ogc/collections/detections/items", {"bbox": bbox_q(i), "limit": 1000}),
            lambda i: naive.page(boxes[i % len(boxes)]),
        ),
        (
            "/grid, world (zoom 2)",
            lambda i: get("/api/v1/grid", {"zoom": 2}),
            lambda i: naive.grid(360 / 4 / 8, None),
        ),
        (
            "/grid, city (zoom 12, city bbox)",
            lambda i: get("/api/v1/grid", {"zoom": 12, "bbox": bbox_q(i)}),
            lambda i: naive.grid(360 / 4096 / 8, boxes[i % len(boxes)]),
        ),
        (
            "z12 tile (city centre, cached after the warm-up)",
            lambda i: get("/api/v1/tiles/{}/{}/{}.mvt".format(*tiles[i % len(tiles)]), {}),
            lambda i: naive.tile(*tiles[i % len(tiles)]),
        ),
    ]
    results = []
    for name, api, base in tqdm(rows, desc="measuring", unit="row"):
        fast = timed(api, args.runs)
        slow = timed(base, args.baseline_runs, warmup=1)
        results.append(
            {
                "what": name,
                "api_p50_ms": pct(fast, 50),
                "api_p95_ms": pct(fast, 95),
                "baseline_p50_ms": pct(slow, 50),
                "baseline_p95_ms": pct(slow, 95),
                "speedup_p50": pct(slow, 50) / pct(fast, 50),
            }
        )
    print(
        f"\n{total} detections, {CITIES} clustered cities; city pages held "
        f"{min(page_sizes)}-{max(page_sizes)} features; API: {args.runs} runs, baseline "
        f"(all rows read and filtered in Python): {args.baseline_runs} runs\n"
    )
    print("| query | API p50 ms | API p95 ms | baseline p50 ms | baseline p95 ms | speed-up |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['what']} | {r['api_p50_ms']:.1f} | {r['api_p95_ms']:.1f} | "
            f"{r['baseline_p50_ms']:.0f} | {r['baseline_p95_ms']:.0f} | "
            f"{r['speedup_p50']:.0f}x |"
        )
    return results


if __name__ == "__main__":
    main()
