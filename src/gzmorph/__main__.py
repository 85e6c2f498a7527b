import sys

from gzmorph.cli import main

sys.exit(main())
