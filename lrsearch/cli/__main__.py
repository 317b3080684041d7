"""``python -m lrsearch.cli``: how supervised worker processes are started."""

from lrsearch.cli import main

main()
