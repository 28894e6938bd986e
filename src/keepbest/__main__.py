"""``python -m keepbest ...`` is the same as the ``keepbest`` command."""

from keepbest.cli import main

main()
