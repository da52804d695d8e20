import sys

from stormctl.cli import main

sys.exit(main())
