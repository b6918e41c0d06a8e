"""`python -m distill`: the same as the `fable-kd` command (distill/cli.py).

    python -m distill distill --config configs/default.toml
"""

import sys

from distill.cli import main

sys.exit(main())
