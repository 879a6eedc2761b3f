#!/usr/bin/env bash
# Install everything the tests need on a fresh machine, then run them.
# torch and torchvision come from PyPI as a matching pair (pulled in by the pack's dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || echo "warning: could not install chromium; browser tests will be skipped" >&2
fi
python3 -m pip install -q -e ".[test]"
python3 -m pytest -x -q "$@"
