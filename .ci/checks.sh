#!/usr/bin/env bash
# The checks behind `make test`: notebooks clean, package in sync, notebook tests, pytest. Non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
failed=()
start=$(date +%s)

echo "== notebooks clean (nbdev_clean leaves no diff)"
nbdev_clean
changed() { git diff --stat -- "$1"; git ls-files --others --exclude-standard -- "$1"; }  # working tree vs index, and new files
if [ -n "$(changed nbs)" ]; then changed nbs; failed+=("nbdev_clean changed notebooks: run nbdev_clean and commit"); fi

echo "== package in sync (nbdev_export leaves no diff)"
nbdev_export
if [ -n "$(changed semsim)" ]; then changed semsim; failed+=("semsim/ out of sync: run nbdev_export and commit"); fi

echo "== nbdev_test (every notebook in nbs/)"
nbdev_test --n_workers 2 --timing || failed+=("nbdev_test")

echo "== pytest tests/"
pytest tests/ -q -p no:cacheprovider -o console_output_style=classic --durations=15 2>&1 | tee /tmp/semsim-pytest.log
[ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("pytest")

echo "== make test took $(( $(date +%s) - start )) s"
if [ ${#failed[@]} -gt 0 ]; then printf 'FAILED: %s\n' "${failed[@]}"; exit 1; fi
echo "all checks passed"
