#!/usr/bin/env bash
# Installs Fashion-MNIST for the experiments from Debian's `dataset-fashion-mnist`
# (IDX files in /usr/share/datasets/fashion-mnist). Nothing is downloaded at run
# time. Where apt is missing or we are not root, it says what to do and exits 0:
# the tests and `--quick` runs use scikit-learn's bundled digits instead.
set -uo pipefail
DIR=/usr/share/datasets/fashion-mnist
if [ -f "$DIR/train-images-idx3-ubyte.gz" ]; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  SUDO=$(command -v sudo || true)
fi
if command -v apt-get >/dev/null && { [ "$(id -u)" = 0 ] || [ -n "$SUDO" ]; }; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 ||
    { $SUDO apt-get update -q >/dev/null 2>&1 &&
      $SUDO apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1; }
fi
if [ ! -f "$DIR/train-images-idx3-ubyte.gz" ]; then
  echo "note: Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist);" \
    "the experiments need it or --data-dir, their --quick mode does not." >&2
fi
exit 0
