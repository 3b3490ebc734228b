#!/usr/bin/env bash
# `make demo`: set up a fresh Debian 12 VM and show gatewayd at work.
# Today it shows the IKEv2 engine negotiating over real sockets; the full tunnel demo
# (VNet-to-VNet pair plus a strongSwan site, traffic across) arrives with the daemon (issue 3/4).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/install-deps.sh
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
echo "== gatewayd: IKEv2 exchange between two engines over UDP (loopback) =="
python3 tools/ike_demo.py
