"""Virtual staining with Pix2PixHD."""
__version__ = "0.1.0"
