"""codecache: signed, reproducible, replicated distribution of pilot code from Subversion."""

__version__ = "0.1.0"
