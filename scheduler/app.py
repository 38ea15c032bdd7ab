"""Producer entry point: ``cd scheduler && python app.py`` serves the API on SCHEDULER_PORT.

The app is built by :func:`scheduler.producer.create_app` in each server process and
served by :func:`scheduler.server.serve` (gunicorn); host, port, processes and threads come
from :mod:`scheduler.config`.
"""

import logging

try:
    from envconfig import ConfigError
    from scheduler.config import load_settings
    from scheduler.producer import create_app
    from scheduler.server import serve
except ModuleNotFoundError as exc:  # a Python without this repository's packages
    raise SystemExit(
        f"error: cannot import {exc.name!r}. Run `make setup` at the repository root, then"
        " `. .venv/bin/activate` before `python app.py`, or run `../.venv/bin/python app.py`."
    ) from None

if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = load_settings()
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    serve(settings, lambda: create_app(settings))
