"""Shared test set-up: offline, with a private cache, on one thread.

Notebooks run by nbmake inherit these environment variables too. One thread:
on a busy 2-core machine two torch threads made notebooks up to 7x slower
(notebook 08: 174 s with two, 26 s with one).
"""

import os
import tempfile

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported, and for the kernels

import torch  # noqa: E402

os.environ.setdefault("CLAPNB_OFFLINE", "1")
os.environ.setdefault("CLAPNB_CACHE", tempfile.mkdtemp(prefix="clapnb-test-cache-"))
os.environ.pop("CLAPNB_MODEL", None)
torch.set_num_threads(1)
