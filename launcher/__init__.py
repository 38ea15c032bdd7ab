"""Process supervisor behind ``make run``: starts every service of the Procfile and stops them.

The launcher checks that the ports are free and that a configured broker accepts connections.
It then starts each Procfile process in its own process group, prefixes its output with the
process name, waits until each service responds and prints the URLs. On Ctrl-C (SIGINT),
SIGTERM or SIGHUP it stops every process group: SIGTERM first, SIGKILL after a grace period.
Run it with ``python -m launcher``.
"""
