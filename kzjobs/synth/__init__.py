"""Synthetic kuzushiji-like books in the competition's format."""
