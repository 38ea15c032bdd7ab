# Image of the Python services: the editor, the producer, the Celery workers, beat and Flower.
# docker-compose.yml runs each of them from this one image with its own command.

# Stage 1: build the browser assets of both frontends with Node.
FROM node:20-bookworm-slim AS assets
WORKDIR /src
# The lock files come first, so the npm ci layers are reused until a dependency changes.
COPY codecollab/frontend/package.json codecollab/frontend/package-lock.json codecollab/frontend/
COPY scheduler/frontend/package.json scheduler/frontend/package-lock.json scheduler/frontend/
RUN cd codecollab/frontend && npm ci --no-audit --no-fund \
    && cd ../../scheduler/frontend && npm ci --no-audit --no-fund
# Tailwind scans the templates for class names, so they are copied with the sources.
COPY codecollab/frontend codecollab/frontend
COPY codecollab/templates codecollab/templates
COPY scheduler/frontend scheduler/frontend
COPY scheduler/templates scheduler/templates
RUN cd codecollab/frontend && npm run build \
    && cd ../../scheduler/frontend && npm run build

# Stage 2: the Python runtime, running as an unprivileged user.
FROM python:3.11-slim-bookworm AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app

# Third-party dependencies first (all but the last line, `-e .`), for layer caching.
COPY requirements.txt ./
RUN grep -v '^-e ' requirements.txt > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY . .
COPY --from=assets /src/codecollab/static/dist codecollab/static/dist
COPY --from=assets /src/scheduler/static/dist scheduler/static/dist
# Editable, so envconfig.repo_root() is /app and relative paths in settings resolve there.
RUN pip install --no-deps -e . \
    && mkdir -p var/data var/media \
    && chown -R app:app var

USER app
EXPOSE 3000 5000 5555
CMD ["python", "-c", "print('Pick a command: see the services in docker-compose.yml')"]
