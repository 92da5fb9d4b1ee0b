import sys

from msgnet.cli import main

sys.exit(main())
