"""cpv's own version, in a module of its own so the package's modules can read it without
importing the package root (which imports them)."""

__version__ = "0.1.0"
