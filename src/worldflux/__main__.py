"""``python -m worldflux``: the same as the ``worldflux`` command."""

from worldflux.cli.main import main

main()
