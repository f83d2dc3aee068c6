"""devserve's version: one place, imported by everything that shows it."""

__version__ = "0.1.0"
