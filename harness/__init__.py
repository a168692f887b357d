"""ptharness: validate i386 early page-table construction on emulated hardware."""
__version__ = "0.1.0"
