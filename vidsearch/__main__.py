"""``python -m vidsearch``: the same as the ``vidsearch`` command."""

from vidsearch.cli import main

main()
