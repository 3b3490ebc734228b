# A strongSwan 5.9 site for the compose lab: charon-systemd with the userspace ESP data
# path (kernel-libipsec), configured by strongswan.conf and swanctl.conf from docker/.
FROM debian:12-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      charon-systemd strongswan-swanctl libcharon-extra-plugins libstrongswan-extra-plugins \
      iproute2 iputils-ping \
 && rm -rf /var/lib/apt/lists/*

COPY docker/strongswan-entrypoint.sh /usr/local/bin/strongswan-entrypoint
RUN chmod 0755 /usr/local/bin/strongswan-entrypoint
EXPOSE 500/udp 4500/udp
ENTRYPOINT ["/usr/local/bin/strongswan-entrypoint"]
