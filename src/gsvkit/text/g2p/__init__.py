"""Grapheme-to-phoneme per language. Heavy libraries are imported inside the functions that need them."""
