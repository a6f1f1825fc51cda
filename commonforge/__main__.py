import sys

from commonforge.cli import main

sys.exit(main())
