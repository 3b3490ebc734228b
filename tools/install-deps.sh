#!/usr/bin/env bash
# Install what gatewayd's lab, tests, demo and benchmark need on Debian 12 (bookworm).
# Idempotent and non-interactive: packages already present are skipped (no apt-get
# update then), and the system's own strongSwan and FreeRADIUS services are kept stopped
# and masked, because the tests run their own charon and freeradius instances (with their
# own configs) in network namespaces.
#
#   sudo tools/install-deps.sh            # system packages
#   sudo tools/install-deps.sh --python   # also: pip install -e '.[test]' from the repo
#   sudo tools/install-deps.sh --update   # force apt-get update first
set -euo pipefail

REQUIRED=(
    strongswan-swanctl charon-systemd libcharon-extra-plugins libstrongswan-extra-plugins
    strongswan-pki iproute2 iputils-ping nftables tcpdump iperf3 procps
    docker-compose freeradius
    python3 python3-venv python3-pip
)
# For the benchmark's WireGuard baseline; both exist in bookworm (wireguard-go is
# 0.0.20220316 there). Missing ones only warn.
OPTIONAL=(wireguard-tools wireguard-go)
# strongswan.service comes with charon-systemd (alias strongswan-swanctl.service);
# strongswan-starter.service with the legacy ipsec starter, should it ever be installed;
# freeradius.service would listen on UDP 1812 with /etc/freeradius's test client.
UNITS=(strongswan.service strongswan-starter.service freeradius.service)

want_python=0 force_update=0
for arg in "$@"; do
    case "$arg" in
        --python) want_python=1 ;;
        --update) force_update=1 ;;
        -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
        *) echo "unknown option: $arg" >&2; exit 2 ;;
    esac
done

if [ "$(id -u)" -ne 0 ]; then
    exec sudo -E "$0" "$@"
fi

export DEBIAN_FRONTEND=noninteractive
log() { printf 'install-deps: %s\n' "$*"; }

# Capture first, then match: "grep -q" closing the pipe early would trip pipefail.
installed() {
    local s
    s=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)
    [ "$s" = "install ok installed" ]
}
has_candidate() {
    local s
    s=$(apt-cache policy "$1" 2>/dev/null || true)
    [[ "$s" == *"Candidate: "[0-9]* ]]
}

missing=()
for p in "${REQUIRED[@]}" "${OPTIONAL[@]}"; do
    installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ] || [ "$force_update" -eq 1 ]; then
    apt-get update -q
fi

if [ "${#missing[@]}" -gt 0 ]; then
    to_install=()
    for p in "${missing[@]}"; do
        if has_candidate "$p"; then
            to_install+=("$p")
        elif [[ " ${OPTIONAL[*]} " == *" $p "* ]]; then
            log "WARNING: optional package '$p' has no candidate in the apt sources; skipped"
        else
            log "ERROR: required package '$p' has no candidate (is this Debian 12?)"
            exit 1
        fi
    done
    # Keep maintainer scripts from starting services during the install (strongSwan,
    # iperf3 daemon); an existing policy (e.g. in containers) is left as it is.
    policy=/usr/sbin/policy-rc.d
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    echo 'iperf3 iperf3/start_daemon boolean false' | debconf-set-selections
    if [ "${#to_install[@]}" -gt 0 ]; then
        log "installing: ${to_install[*]}"
        apt-get install -y -q --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "${to_install[@]}"
    fi
else
    log "all packages already installed"
fi

# The system's strongSwan would bind UDP 500/4500 in the root namespace and read
# /etc/swanctl, FreeRADIUS UDP 1812: stop them and mask them (with or without systemd).
if [ -d /run/systemd/system ]; then
    for u in "${UNITS[@]}"; do
        systemctl stop "$u" 2>/dev/null || true
        systemctl disable "$u" 2>/dev/null || true
        systemctl mask "$u" >/dev/null
    done
else
    for u in "${UNITS[@]}"; do
        systemctl --root=/ disable "$u" >/dev/null 2>&1 || true
        systemctl --root=/ mask "$u" >/dev/null 2>&1 || ln -sfn /dev/null "/etc/systemd/system/$u"
    done
fi
log "masked: ${UNITS[*]}"

if [ "$want_python" -eq 1 ]; then
    repo=$(cd "$(dirname "$0")/.." && pwd)
    log "pip install -e '$repo[test]'"
    python3 -m pip install -q -e "$repo[test]"
fi

# Report what the lab checks for, so a broken install shows here and not in a test.
for cmd in /usr/sbin/charon-systemd swanctl pki ip nft tcpdump iperf3 ping docker-compose \
    /usr/sbin/freeradius; do
    command -v "$cmd" >/dev/null || { log "ERROR: $cmd not found after install"; exit 1; }
done
[ -f /etc/strongswan.d/charon/kernel-libipsec.conf ] || {
    log "ERROR: kernel-libipsec plugin config missing"; exit 1; }
command -v wg >/dev/null && command -v wireguard-go >/dev/null ||
    log "note: wg/wireguard-go not available; make bench will show its wireguard-go column as failed"
log "ok (strongSwan $(dpkg-query -W -f='${Version}' charon-systemd))"
