"""Command line of the launcher: ``python -m launcher [--procfile PATH] [--check]``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from envconfig import ConfigError, repo_root

from .config import environment_for_children, load_config
from .output import PrefixedOutput
from .preflight import check_broker, check_ports, rate_limit_warnings
from .procfile import ProcfileError, read_procfile
from .supervisor import Supervisor

EXIT_PREFLIGHT_FAILED = 2


def main(argv: list[str] | None = None) -> int:
    """Run the pre-flight checks, then supervise the Procfile until Ctrl-C.

    :return: the process exit code: 0 after Ctrl-C, 1 when a process failed, 2 when a
        check failed before anything started.
    """
    parser = argparse.ArgumentParser(
        prog="python -m launcher",
        description="Start every process of the Procfile, print the URLs once all respond, "
        "and stop them all on Ctrl-C.",
    )
    parser.add_argument(
        "-f",
        "--procfile",
        type=Path,
        default=None,
        help="Procfile to run (default: Procfile at the repository root)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only check that the ports are free and the broker accepts connections, then exit",
    )
    args = parser.parse_args(argv)

    try:
        config = load_config(args.procfile)
        specs = read_procfile(config.procfile)
    except (ConfigError, ProcfileError, OSError) as error:
        print(f"launcher: {error}", file=sys.stderr)
        return EXIT_PREFLIGHT_FAILED
    if not specs:
        print(f"launcher: {config.procfile} lists no processes", file=sys.stderr)
        return EXIT_PREFLIGHT_FAILED

    output = PrefixedOutput([spec.name for spec in specs])
    problems = check_ports(config.endpoints, {spec.name for spec in specs})
    problems += check_broker(config.broker_url)
    for problem in problems:
        output.note(f"error: {problem}")
    if problems:
        output.note("nothing was started")
        return EXIT_PREFLIGHT_FAILED
    if args.check:
        return 0

    for warning in rate_limit_warnings(config):
        output.note(f"warning: {warning}")
    supervisor = Supervisor(
        specs, config, env=environment_for_children(), cwd=repo_root(), output=output
    )
    return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
