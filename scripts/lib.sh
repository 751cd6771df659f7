# Shared set-up for scripts/: a virtualenv on the same CPython porch embeds, and the
# release build every test and the demo share.
VENV="${PORCH_VENV:-$PWD/.venv}"
PYTHON=/usr/bin/python3   # the CPython porch links against (see .cargo/config.toml)

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

build_release() {
  echo "== cargo build --release"
  cargo build --release --locked 2>&1 | grep -v '^\s*Compiling' || true
  test -x target/release/porch
}
