FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FORUMBRIDGE_CONFIG=/app/config/forumbridge.toml \
    FORUMBRIDGE_HTTP__HOST=0.0.0.0 \
    FORUMBRIDGE_DATA_DIR=/var/lib/forumbridge \
    FORUMBRIDGE_DATABASE__URL=sqlite+aiosqlite:////var/lib/forumbridge/forumbridge.db

WORKDIR /app
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY connectors ./connectors
COPY service ./service
COPY config ./config
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /var/lib/forumbridge --create-home forumbridge

USER forumbridge
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=4).status != 200)"

# Migrations first, then the server; SIGTERM drains requests and stops.
CMD ["forumbridge", "serve", "--migrate"]
