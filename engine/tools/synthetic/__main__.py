"""``python -m engine.tools.synthetic PATH N [SEED]``: write N synthetic rows to PATH (developer convenience)."""

import sys

from engine.tools.synthetic.files import write_sample

write_sample(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 0)
