"""``python -m app`` is the ``k8si`` command."""

from .cli import main

main()
