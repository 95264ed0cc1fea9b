"""bmcell: MobileViT classifiers of bone-marrow and blood white-cell images, from training to phones."""

__version__ = "0.1.0"
