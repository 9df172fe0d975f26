"""Data layer: readers, preprocessing, noise injection, splits and the LightningDataModule."""
