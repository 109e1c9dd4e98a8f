"""Localization: label map -> particle centres (reference, cpu and gpu backends)."""
