"""Data sets: the built-in synthetic demo set and image folders (EuroSAT / UC Merced layout)."""

from .dataset import Dataset, data_source, dataset_from_source, load_dataset

__all__ = ["Dataset", "data_source", "dataset_from_source", "load_dataset"]
