import os

# Everything the tests run must work without a network: make any hub access fail fast.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GENREP_NO_PROGRESS", "1")
