# Sourced by scripts/run, scripts/test and scripts/lint: makes a virtualenv with trashmap
# installed (editable) with the extras `bootstrap_venv EXTRAS` names: default web,worker
# (what `trashmap up` runs); the tests pass all,test. TRASHMAP_VENV picks its folder
# (default ~/.cache/trashmap/venv, shared by checkouts so the 5 GB PyTorch install happens
# once per machine).
set -euo pipefail

TRASHMAP_VENV="${TRASHMAP_VENV:-$HOME/.cache/trashmap/venv}"
TORCH_PINS=("torch==2.14.1" "torchvision==0.29.1")

bootstrap_venv() {
  local extras="${1:-web,worker}"
  if [ ! -x "$TRASHMAP_VENV/bin/python" ]; then
    echo ">> creating virtualenv $TRASHMAP_VENV"
    python3 -m venv "$TRASHMAP_VENV"
    "$TRASHMAP_VENV/bin/pip" install -q --upgrade pip
  fi
  # The pinned builds first, so the extras' torch ranges find them installed.
  if ! "$TRASHMAP_VENV/bin/python" -c "import torch, torchvision" 2>/dev/null; then
    echo ">> installing ${TORCH_PINS[*]} (large; once per machine)"
    "$TRASHMAP_VENV/bin/pip" install -q "${TORCH_PINS[@]}"
  fi
  echo ">> installing trashmap${extras:+[$extras]}"
  "$TRASHMAP_VENV/bin/pip" install -q --disable-pip-version-check -e ".${extras:+[$extras]}" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  export PATH="$TRASHMAP_VENV/bin:$PATH"
}
