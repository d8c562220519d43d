"""Run by Debian's python3 with QGIS (tests/web/test_qgis.py): open an OGC API - Features
collection with QGIS's own OAPIF provider, as a user adding a layer does, and print what
QGIS sees as JSON: validity, feature count, field types, CRS and every feature's values.

    python3 read_oapif.py LANDING_URL COLLECTION PAGE_SIZE
"""

import json
import os
import sys

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from qgis.core import QgsApplication, QgsVectorLayer  # noqa: E402


def main() -> None:
    landing, collection, page = sys.argv[1], sys.argv[2], sys.argv[3]
    QgsApplication.setPrefixPath("/usr", True)  # where Debian puts the providers
    app = QgsApplication([], False)
    app.initQgis()
    try:
        uri = f"url='{landing}' typename='{collection}' pageSize='{page}' pagingEnabled='true'"
        layer = QgsVectorLayer(uri, collection, "OAPIF")
        # (layer.error() is not read: in QGIS 3.22's bindings it crashes the interpreter.)
        out = {"valid": layer.isValid()}
        if layer.isValid():
            fields = layer.fields()
            out["crs"] = layer.crs().authid()
            out["types"] = {f.name(): f.typeName() for f in fields}
            out["features"] = [
                {
                    "label": feature["label"],
                    "score": feature["score"],
                    "photo_id": feature["photo_id"],
                    "point": [feature.geometry().asPoint().x(), feature.geometry().asPoint().y()],
                }
                for feature in layer.getFeatures()
            ]
        del layer  # before exitQgis, which tears down the providers the layer uses
        print(json.dumps(out), flush=True)
    finally:
        app.exitQgis()


main()
