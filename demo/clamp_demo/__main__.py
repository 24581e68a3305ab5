"""`python -m clamp_demo` (what `make demo` runs): see clamp_demo.demo."""

import sys

from clamp_demo.demo import main

if __name__ == "__main__":
    sys.exit(main())
