import sys

from pix2pixhd.cli import main

sys.exit(main())
