"""`python -m pyllm ...`: the `pyllm` command (cli.py)."""
import sys

from .cli import main

sys.exit(main())
