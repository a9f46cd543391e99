"""Argument parsing shared by the harness's commands: a bad argument is one line on stderr, exit 2."""
from __future__ import annotations

import argparse
import sys


class UsageError(Exception):
    """Bad command-line input; the message is the whole one-line report."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise UsageError instead of printing the usage (two lines and more)."""

    def error(self, message: str):
        raise UsageError(message)


def parse_or_exit(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse `argv`; on a usage error print `prog: error: message` on one line and exit with 2."""
    try:
        return parser.parse_args(argv)
    except UsageError as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
