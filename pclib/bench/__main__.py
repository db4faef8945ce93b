"""``python -m pclib.bench``."""

from .core import main

main()
