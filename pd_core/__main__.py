"""``python -m pd_core``: the same command line as the installed ``pdlab``, named as it was typed."""
import sys

from .cli import main

sys.exit(main(prog="python -m pd_core"))
