import sys

from pix2pixhd.cli import main
from pix2pixhd.files import stop_cleanly_on_sigterm

stop_cleanly_on_sigterm()  # `kill PID` removes the lock and temporaries, as Ctrl-C does
sys.exit(main())
