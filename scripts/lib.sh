# Shared set-up for scripts/: a virtualenv, and porch built once and installed into it the
# way users install it (`pip install` of the wheel: the `porch` executable on the venv's
# PATH, the worker extension in its site-packages).
VENV="${PORCH_VENV:-$PWD/.venv}"
PYTHON="${PORCH_PYTHON_BASE:-/usr/bin/python3}"   # Debian's CPython; any 3.9+ works
MATURIN='maturin>=1.9,<2'

ensure_venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip
  fi
  local req
  for req in "$@"; do
    "$VENV/bin/pip" install -q -r "$req"
  done
}

# Builds the wheel (front executable + worker extension) into target/wheels and installs it
# into $VENV. Other interpreters' tests install the same wheel.
build_release() {
  echo "== cargo build --release, pip wheel, pip install"
  cargo build --release --locked 2>&1 | grep -v '^\s*Compiling' || true
  "$VENV/bin/pip" install -q "$MATURIN"
  rm -rf target/wheels
  PATH="$VENV/bin:$PATH" "$VENV/bin/pip" wheel -q --no-build-isolation --no-deps -w target/wheels . \
    2>&1 | grep -v 'build-backend. in pyproject.toml is not set to .maturin' || true
  WHEEL=$(ls target/wheels/porch-*.whl)
  "$VENV/bin/pip" install -q --force-reinstall --no-deps "$WHEEL"
  test -x "$VENV/bin/porch"
  export PORCH_WHEEL="$PWD/$WHEEL"
}
