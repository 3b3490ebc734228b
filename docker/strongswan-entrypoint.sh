#!/bin/sh
# Start charon, wait for its vici socket, load swanctl.conf, then stay with charon.
set -eu
/usr/sbin/charon-systemd &
charon=$!
trap 'kill -TERM "$charon"; wait "$charon"' TERM INT
i=0
until swanctl --stats >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 100 ] || ! kill -0 "$charon" 2>/dev/null; then
        echo "charon did not come up" >&2
        exit 1
    fi
    sleep 0.1
done
swanctl --load-all --noprompt
wait "$charon"
