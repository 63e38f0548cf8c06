"""The `callgate` console script: one entry point, one module per subcommand in callgate/commands/."""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand name -> module in callgate.commands exposing add_arguments(parser) and run(args) -> int
COMMANDS: dict[str, str] = {
    "serve": "serve",
    "simulate": "simulate",
    "replay": "replay",
    "eval": "evaluate",
    "eval-turns": "eval_turns",
    "tune": "tune",
    "corpus": "corpus",
    "train": "train",
    "demo": "demo",
    "campaign": "campaign",
}


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 2, no traceback."""


def check_port(port: int | None, option: str) -> None:
    """A TCP port option: 1-65535, or 0 for any free one (the OS would bind another port, or fail late)."""
    if port is not None and not 0 <= port <= 65535:
        raise CliError(f"{option} must be 0-65535 (0 = any free port)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="callgate", description="Who picked up, and what do we do now?")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module_name in COMMANDS.items():
        try:
            module = importlib.import_module(f"callgate.commands.{module_name}")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("callgate.commands"):
                continue  # not built yet
            raise
        p = sub.add_parser(name, help=(module.__doc__ or "").strip().splitlines()[0], description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CliError as e:
        print(f"callgate {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # `python -m callgate.cli`: run the imported module's main, so commands' CliError is the one caught.
    from callgate.cli import main as _main

    sys.exit(_main())
