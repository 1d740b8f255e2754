# xoauth2-proxy in a container.
#   docker build -t xoauth2-proxy .
#   docker run -it --rm -v xoauth2-etc:/etc/xoauth2-proxy -v xoauth2-data:/var/lib/xoauth2-proxy \
#       xoauth2-proxy account add USER          # once per account (device code works headless)
#   docker run -d --name xoauth2-proxy --stop-timeout 30 -p 127.0.0.1:1143:1143 -p 127.0.0.1:1587:1587 \
#       -v xoauth2-etc:/etc/xoauth2-proxy -v xoauth2-data:/var/lib/xoauth2-proxy xoauth2-proxy
#   docker kill --signal HUP xoauth2-proxy      # re-read config.toml; open sessions go on
# Inside a container the listeners must use interface=0.0.0.0 (see README, "Docker").
FROM python:3.11-slim

RUN groupadd --system --gid 10025 xoauth2-proxy \
    && useradd --system --uid 10025 --gid 10025 --home-dir /var/lib/xoauth2-proxy --shell /usr/sbin/nologin xoauth2-proxy \
    && install -d -o xoauth2-proxy -g xoauth2-proxy -m 0700 /var/lib/xoauth2-proxy \
    && install -d -o xoauth2-proxy -g xoauth2-proxy -m 0750 /etc/xoauth2-proxy

COPY pyproject.toml README.md /src/
COPY proxy /src/proxy
# [postgresql]: psycopg for several instances sharing one database (contrib/several-instances).
RUN pip install --no-cache-dir '/src[postgresql]' && rm -rf /src

# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10025:10025
ENV XOAUTH2_PROXY_CONFIG=/etc/xoauth2-proxy/config.toml \
    PYTHONUNBUFFERED=1
VOLUME ["/etc/xoauth2-proxy", "/var/lib/xoauth2-proxy"]
EXPOSE 1143 1110 1587
# SIGTERM: stop accepting, let open sessions end (shutdown_grace_seconds), exit 0. Docker waits
# 10 s before SIGKILL unless told otherwise: run with --stop-timeout 30.
STOPSIGNAL SIGTERM
# Every configured listener must accept a connection and greet.
HEALTHCHECK --interval=30s --timeout=15s --start-period=20s --retries=3 CMD ["xoauth2-proxy", "health"]
ENTRYPOINT ["xoauth2-proxy"]
CMD ["serve"]
