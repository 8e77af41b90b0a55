# sav in a container: the same layout as the systemd unit (scripts/install.sh).
#
#   docker build -t sav .
#   docker run --network host -v sav-data:/var/lib/sav \
#       -v /etc/sav/sav.toml:/etc/sav/sav.toml:ro --env-file /etc/sav/env sav
#
# Host networking: RTP uses [media] rtp_port_min..rtp_port_max (20000-20999
# UDP by default), one port pair per call, and the SDP advertises the
# host's address; published ports through Docker's NAT would need the whole
# range mapped one to one and [sip] advertised_ip set to the host's.
# The image's /etc/sav/sav.toml is the repository's, listening on
# 127.0.0.1: mount your own.

FROM rust:1.94-bookworm AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked \
    && scripts/install.sh --no-unit --binary target/release/sav

FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /var/lib/sav --shell /usr/sbin/nologin sav \
    && install -d -o sav -g sav -m 0750 /var/lib/sav
COPY --from=build /usr/local/bin/sav /usr/local/bin/sav
COPY --from=build /usr/share/sav /usr/share/sav
COPY --from=build /etc/sav /etc/sav
COPY --from=build /usr/local/share/man/man1 /usr/local/share/man/man1
COPY docker/entrypoint.sh /usr/local/bin/sav-entrypoint
USER sav
WORKDIR /var/lib/sav
VOLUME /var/lib/sav
# SIP, metrics/health, RTP (documentation: run with --network host).
EXPOSE 5060/udp 5060/tcp 9464/tcp 20000-20999/udp
# Liveness from /livez ([metrics] listen; the slim image has no curl).
HEALTHCHECK --interval=10s --timeout=3s CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /livez HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/sav-entrypoint"]
CMD ["serve"]
