#!/usr/bin/env bash
# Run the test suite (installs what it needs first).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The CLEVR renderer (bpy, ~1 GB, its own environment): its tests skip, saying why, where it cannot install.
if ! .venv/bin/python -c "from msgnet.data.clevr import renderer_python; renderer_python()" 2>/dev/null; then
    .venv/bin/msgnet data setup-clevr 2>&1 | grep -v "^WARNING: Location" | tail -2 \
        || echo "test: bpy could not be installed; the CLEVR rendering tests will be skipped"
fi
# One pytest worker per core (pytest-xdist), a file's tests on one worker so module fixtures are built once;
# each test runs on one thread (tests/conftest.py).
exec .venv/bin/python -m pytest -q -n auto --dist loadfile "$@"
