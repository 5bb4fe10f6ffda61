"""Virtual staining with Pix2PixHD."""
__version__ = "0.1.0"

# The table of model kinds hands `config.validate` each kind's checks when it is imported. It
# sits above `config` (it builds networks), so it is imported here, before any config is read;
# it loads torch only when it builds a network.
from pix2pixhd import models  # noqa: E402, F401
