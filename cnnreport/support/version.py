"""The package version, in one place (the root package and provenance read it)."""

__version__ = "0.1.0"
