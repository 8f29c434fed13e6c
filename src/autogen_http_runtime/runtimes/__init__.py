"""Compatibility namespace mirroring ``autogen_ext.runtimes``."""
