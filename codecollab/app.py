"""Start the editor: ``cd codecollab && python app.py``.

The async mode (``CODECOLLAB_ASYNC_MODE``, gevent by default) is read before anything else is
imported, because gevent and eventlet must monkey-patch the standard library first.
"""

try:
    from codecollab.config import read_async_mode
    from envconfig import ConfigError, load_env
except ModuleNotFoundError as exc:  # a Python without this repository's packages
    raise SystemExit(
        f"error: cannot import {exc.name!r}. Run `make setup` at the repository root, then"
        " `. .venv/bin/activate` before `python app.py`, or run `../.venv/bin/python app.py`."
    ) from None

load_env()
try:
    _ASYNC_MODE = read_async_mode()
except ConfigError as exc:
    raise SystemExit(f"error: {exc}") from None
if _ASYNC_MODE == "gevent":
    from gevent import monkey

    monkey.patch_all()
elif _ASYNC_MODE == "eventlet":
    import eventlet

    eventlet.monkey_patch()

from codecollab.server import main  # noqa: E402

if __name__ == "__main__":
    main()
