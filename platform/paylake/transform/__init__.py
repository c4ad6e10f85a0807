"""Transformations: bronze → silver entities → gold star schema."""
