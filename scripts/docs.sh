#!/usr/bin/env bash
# Builds the documentation site to docs/_build/html (warnings are errors). Sets up .venv
# with the test and docs extras, installs Debian's libjs-mathjax (math, served locally)
# and chromium (for tests/test_docs_browser.py) if they are missing. The build executes
# the notebooks (myst-nb); the test suite does not. Arguments go to sphinx-build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh "test,docs"
missing=()
[ -f /usr/share/javascript/mathjax/MathJax.js ] || missing+=(libjs-mathjax)
command -v chromium >/dev/null || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=$(command -v sudo || true)
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 ||
    { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q "${missing[@]}" >/dev/null; } ||
    echo "warning: could not install ${missing[*]}" >&2
fi
bash scripts/setup_data.sh
start=$SECONDS
.venv/bin/sphinx-build -W --keep-going -b html docs docs/_build/html "$@"
echo "docs built in $((SECONDS - start)) s: docs/_build/html/index.html"
