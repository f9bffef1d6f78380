"""The `joulebench` argument parser: the top-level options, and one sub-parser per command,
each registered by the module of its stage (study, models, bench, serving, results)."""

from __future__ import annotations

import argparse

import joulebench
from joulebench.cli import bench, models, results, serving, study

DESCRIPTION = "Every workflow step can also be run by hand (e.g. on a GPU node)."

#: The command modules, in the order their commands are listed: the pipeline's stages.
COMMAND_MODULES = (study, models, bench, serving, results)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="joulebench", description=DESCRIPTION)
    parser.add_argument(
        "--version", action="version", version=f"joulebench {joulebench.__version__}"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser
