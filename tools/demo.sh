#!/usr/bin/env bash
# `make demo`: set up a fresh Debian 12 VM and show gatewayd carrying real traffic:
# a hub gatewayd with a gatewayd site (VNet-to-VNet) and a strongSwan site (site-to-site),
# in network namespaces, on built-in defaults. Needs root. Leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
exec python3 tools/demo.py
