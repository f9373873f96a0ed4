"""The ``worldflux`` command line (``worldflux --help``)."""

from worldflux.cli.main import app, main

__all__ = ["app", "main"]
