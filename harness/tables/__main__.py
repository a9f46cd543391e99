"""`python -m harness.tables`."""
import sys

from harness.tables.command import main

sys.exit(main())
