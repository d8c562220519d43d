"""A bounded atheris run over the upload path: no input may produce a 5xx or a crash."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.conftest import ROOT

HERE = ROOT / "tests" / "reliability"


def test_upload_path_survives_fuzzing(tmp_path) -> None:  # type: ignore[no-untyped-def]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    result = subprocess.run(
        [
            sys.executable,
            str(HERE / "fuzz_upload.py"),
            "-max_total_time=25",
            "-rss_limit_mb=4096",
            "-max_len=65536",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
            str(HERE / "fuzz_seeds"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    runs = re.search(r"Done (\d+) runs", output)
    assert runs and int(runs.group(1)) > 100, output[-2000:]
