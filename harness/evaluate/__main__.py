"""`python -m harness.evaluate`."""
import sys

from harness.evaluate.command import main

sys.exit(main())
