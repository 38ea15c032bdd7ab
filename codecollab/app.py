"""Start the editor: ``cd codecollab && python app.py``.

The async mode (``CODECOLLAB_ASYNC_MODE``, gevent by default) is read before anything else is
imported, because gevent and eventlet must monkey-patch the standard library first.
"""

from codecollab.config import read_async_mode
from envconfig import load_env

load_env()
_ASYNC_MODE = read_async_mode()
if _ASYNC_MODE == "gevent":
    from gevent import monkey

    monkey.patch_all()
elif _ASYNC_MODE == "eventlet":
    import eventlet

    eventlet.monkey_patch()

from codecollab.server import main  # noqa: E402

if __name__ == "__main__":
    main()
