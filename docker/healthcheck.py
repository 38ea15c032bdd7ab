"""Exit 0 when an HTTP URL responds with a 2xx status, 1 otherwise: ``healthcheck.py URL``.

Used by the compose health checks, because the slim Python image has no curl or wget.
"""

import sys
import urllib.error
import urllib.request


def main() -> int:
    """Request the URL given as the only argument and report the outcome as the exit code."""
    if len(sys.argv) != 2:
        print("usage: healthcheck.py URL", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(sys.argv[1], timeout=5) as response:
            return 0 if 200 <= response.status < 300 else 1
    except (urllib.error.URLError, OSError) as error:
        print(f"{sys.argv[1]}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
