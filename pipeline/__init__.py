"""tomopick: octopi-compatible particle picking in cryo-ET tomograms (segment -> localize -> evaluate)."""

__version__ = "0.1.0"
