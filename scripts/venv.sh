# Sourced by demo.sh and test.sh: creates .venv if needed and installs the
# project with the extras named in $1. Uses $PYTHON (default python3 >= 3.11).
set -euo pipefail
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[$1]"
echo "$PWD" >"$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/optax_decay_examples.pth"  # repo root on sys.path: `from examples import ...` (examples/README.md)
