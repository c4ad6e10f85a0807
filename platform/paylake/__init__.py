"""paylake: the unified data platform of a payments company, built on Ray."""

__version__ = "0.1.0"
