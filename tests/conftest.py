"""Shared test set-up: offline, with a private cache, on few threads.

Notebooks run by nbmake inherit these environment variables too.
"""

import os
import tempfile

import torch

os.environ.setdefault("CLAPNB_OFFLINE", "1")
os.environ.setdefault("CLAPNB_CACHE", tempfile.mkdtemp(prefix="clapnb-test-cache-"))
os.environ.pop("CLAPNB_MODEL", None)
torch.set_num_threads(min(2, torch.get_num_threads()))
