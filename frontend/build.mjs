// Bundles the pages' scripts and styles into ../web/static (committed: no npm at run time).
import { build } from "esbuild";
import { cpSync, mkdirSync } from "node:fs";

const out = new URL("../web/static/", import.meta.url).pathname;

await build({
  entryPoints: { map: "src/map.js", upload: "src/upload.js", docs: "src/docs.js" },
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2019"],
  outdir: `${out}app`,
  loader: { ".png": "file", ".svg": "file" },
  assetNames: "assets/[name]-[hash]",
  legalComments: "linked",
});

// Swagger UI ships prebuilt; it is copied, not re-bundled.
mkdirSync(`${out}vendor/swagger-ui`, { recursive: true });
for (const name of ["swagger-ui-bundle.js", "swagger-ui.css", "LICENSE", "NOTICE"]) {
  cpSync(`node_modules/swagger-ui-dist/${name}`, `${out}vendor/swagger-ui/${name}`);
}
console.log(`built into ${out}`);
