"""`python -m pyllm.convert SOURCE weights.bin ...`: the converter's command line (convert/cli.py)."""
import sys

from .cli import main

sys.exit(main())
