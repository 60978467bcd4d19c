# syntax=docker/dockerfile:1
# One image for every role: `mailgate serve` (default), `engine`, `worker`, `gateway`, `inbox`.
FROM python:3.12-slim

# Debian's Chromium and its driver for MAILGATE_FETCHER=browser; Selenium is pointed at
# /usr/bin/chromedriver, so nothing is downloaded at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends chromium chromium-driver \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --gid 10001 mailgate \
    && useradd --uid 10001 --gid mailgate --create-home mailgate \
    && mkdir -p /data \
    && chown mailgate:mailgate /data

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MAILGATE_DATA_DIR=/data

# A plain install: the wheel carries templates/ inside the package (service.templates), so the
# source tree is not needed once it is built.
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY templates ./templates
RUN --mount=type=cache,target=/root/.cache/pip pip install . && rm -rf /src/build
WORKDIR /data

USER 10001:10001
VOLUME ["/data"]

# gateway (MAILGATE_HTTP_PORT), reply listener (MAILGATE_INBOUND_PORT), `mailgate engine`
# (MAILGATE_ENGINE_PORT)
EXPOSE 9000 2525 8001

# The default command serves the gateway, so that is what the image checks; compose files name
# the role of each service in their own healthcheck.
HEALTHCHECK --interval=30s --timeout=10s --start-period=30s --retries=3 \
    CMD ["mailgate", "healthcheck", "--role", "gateway"]

ENTRYPOINT ["mailgate"]
CMD ["serve"]
