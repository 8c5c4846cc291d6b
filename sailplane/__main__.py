import sys

from sailplane.cli import main

sys.exit(main())
