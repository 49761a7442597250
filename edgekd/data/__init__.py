"""Data sets: the built-in synthetic demo set and image folders (EuroSAT / UC Merced layout)."""

from .dataset import Dataset, load_dataset

__all__ = ["Dataset", "load_dataset"]
