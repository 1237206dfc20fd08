"""The ``hadis`` command line: one module per command group (``main`` builds the parser and
runs a command; ``common`` holds the helpers the groups share).

Bad input data (a malformed trace, profile or table) prints one line naming the file and line
and exits with code 2.
"""

from hadis.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
