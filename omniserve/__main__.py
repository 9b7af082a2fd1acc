import sys

from omniserve.cli import main

sys.exit(main())
