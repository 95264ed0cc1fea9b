"""Datasets, label maps, splits, transforms and synthetic cells."""
