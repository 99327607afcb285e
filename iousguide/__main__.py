import sys

from iousguide.cli import main

sys.exit(main())
