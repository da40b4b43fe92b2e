"""Loaders for the offline models and data that PyPI / Debian packages ship (see core.assets)."""
