// Bundles the pages' scripts and styles into ../web/static (committed: no npm at run time).
import { build } from "esbuild";
import { cpSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { geoEquirectangular } from "d3-geo";
import { geoProject } from "d3-geo-projection";
import { feature, mesh } from "topojson-client";

const out = new URL("../web/static/", import.meta.url).pathname;

await build({
  entryPoints: {
    map: "src/map.js",
    upload: "src/upload.js",
    docs: "src/docs.js",
    review: "src/review.js",
  },
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2019"],
  outdir: `${out}app`,
  loader: { ".png": "file", ".svg": "file" },
  assetNames: "assets/[name]-[hash]",
  legalComments: "linked",
  // MapLibre reads import.meta.url only to guess its worker's URL; map.js sets that URL.
  logOverride: { "empty-import-meta": "silent" },
});

// Swagger UI ships prebuilt; it is copied, not re-bundled.
mkdirSync(`${out}vendor/swagger-ui`, { recursive: true });
for (const name of ["swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"]) {
  cpSync(`node_modules/swagger-ui-dist/${name}`, `${out}vendor/swagger-ui/${name}`);
}
// MapLibre's worker runs from this origin (the pages' CSP allows no blob: workers).
mkdirSync(`${out}vendor/maplibre`, { recursive: true });
// A self-contained module script, saved as .js so every server sends a JavaScript type.
cpSync("node_modules/maplibre-gl/dist/maplibre-gl-worker.mjs", `${out}vendor/maplibre/maplibre-gl-worker.js`);
cpSync("node_modules/maplibre-gl/LICENSE.txt", `${out}vendor/maplibre/LICENSE.txt`);

// The offline base map: Natural Earth 1:110m land, coastlines and country borders (world-atlas).
const atlas = (name) => JSON.parse(readFileSync(`node_modules/world-atlas/${name}`, "utf8"));
const round = (coords) => (typeof coords[0] === "number"
  ? coords.map((v) => Math.round(v * 1000) / 1000) : coords.map(round));
const plateCarree = geoEquirectangular().scale(180 / Math.PI).translate([0, 0]).reflectY(true)
  .precision(0);
const land = atlas("land-110m.json");
const countries = atlas("countries-110m.json");
const basemap = {
  type: "FeatureCollection",
  features: [
    { ...feature(land, land.objects.land).features[0], properties: { kind: "land" } },
    { type: "Feature", properties: { kind: "coast" }, geometry: mesh(land, land.objects.land) },
    {
      type: "Feature",
      properties: { kind: "border" },
      geometry: mesh(countries, countries.objects.countries, (a, b) => a !== b),
    },
  ]
    // world-atlas stitches shapes across the 180th meridian (for spherical maps); a flat
    // map needs them cut there again: an identity plate carrée projection clips them.
    .map((f) => geoProject(f, plateCarree))
    .map((f) => ({ ...f, geometry: { ...f.geometry, coordinates: round(f.geometry.coordinates) } })),
};
writeFileSync(`${out}app/basemap.json`, JSON.stringify(basemap));
cpSync("node_modules/world-atlas/LICENSE", `${out}app/basemap.LICENSE.txt`);
console.log(`built into ${out}`);
