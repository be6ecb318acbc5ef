"""``python -m edgefg`` = the ``edgefg`` command."""
from edgefg.cli import main

main()
