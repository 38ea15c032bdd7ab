"""Worker entry point: ``cd scheduler && celery -A tasks.celery_app worker --loglevel=info``.

The tasks live in :mod:`scheduler.worker`; this file only exposes the app under the name
that the command line expects.
"""

from scheduler.worker import celery_app

__all__ = ["celery_app"]
