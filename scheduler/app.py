"""Producer entry point: ``cd scheduler && python app.py`` serves the API on SCHEDULER_PORT.

The app is built by :func:`scheduler.producer.create_app` and served by
:func:`scheduler.server.serve`; host and port come from :mod:`scheduler.config`.
"""

import logging

from scheduler.config import load_settings
from scheduler.producer import create_app
from scheduler.server import serve

if __name__ == "__main__":
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = load_settings()
    serve(create_app(settings), settings)
