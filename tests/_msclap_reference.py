"""msclap's own inference code (``msclap/CLAPWrapper.py``), loaded offline for parity tests.

``load_wrapper()`` returns the package's ``CLAPWrapper`` module without running
``msclap/__init__.py``: while it is imported, a bare ``msclap`` package stands in for the
real one and a ``torchaudio`` stand-in (whose file reading and resampling refuse to run)
for the real one, which is not installed here; the module's global side effects
(``warnings.filterwarnings("ignore")`` and transformers' log level) are undone.

``reference(wrapper, model, tokenizer)`` builds a ``CLAPWrapper`` the package's way
(``__init__`` -> ``load_clap``: the ``CLAP`` module from the package's yaml
configuration, the tokenizer through ``AutoTokenizer.from_pretrained`` — here handed
``tokenizer`` — with GPT-2's ``"!"`` padding token), its text tower built from ``model``'s
own configuration instead of a download, then loads ``model``'s weights into it,
strictly. Its audio comes from arrays instead of files: ``read_audio(key)`` returns
``clips[key]`` at 44.1 kHz (the file reading and resampling are the one part clapnb
does its own way). transformers 5 has no ``encode_plus``; for one text it is the
tokenizer's ``__call__`` in transformers 4, so the stand-in calls that.
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from clapnb import msclap


def _stand_in(name: str, **attrs) -> ModuleType:
    module = ModuleType(name, "test stand-in (tests/_msclap_reference.py)")
    module.__path__ = []
    module.__dict__.update(attrs)
    return module


def _no_torchaudio(*args, **kwargs):
    raise AssertionError("the parity tests hand CLAPWrapper arrays, never files to read or resample")


def load_wrapper() -> ModuleType:
    """msclap/CLAPWrapper.py, imported offline (see the module docstring)."""
    from transformers import logging as hf_logging
    msclap.import_msclap_models()
    folder = msclap._package_folder()
    package = _stand_in("msclap")
    package.__path__ = [str(folder)]
    transforms = _stand_in("torchaudio.transforms", Resample=_no_torchaudio)
    torchaudio = _stand_in("torchaudio", load=_no_torchaudio, transforms=transforms)
    before, verbosity = set(sys.modules), hf_logging.get_verbosity()
    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        for name, module in {"msclap": package, "torchaudio": torchaudio,
                             "torchaudio.transforms": transforms}.items():
            mp.setitem(sys.modules, name, module)
        spec = importlib.util.spec_from_file_location("msclap.CLAPWrapper", folder / "CLAPWrapper.py")
        wrapper = importlib.util.module_from_spec(spec)
        mp.setitem(sys.modules, "msclap.CLAPWrapper", wrapper)
        try:
            spec.loader.exec_module(wrapper)
        finally:
            hf_logging.set_verbosity(verbosity)
            for name in set(sys.modules) - before:  # msclap.models.mapper and the like
                if name.split(".")[0] in ("msclap", "torchaudio"):
                    del sys.modules[name]
    return wrapper


class _Transformers4Calls:
    """A tokenizer with transformers 4's ``encode_plus`` (one text: ``__call__``)."""

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer

    def encode_plus(self, text, **kwargs):
        return self._tokenizer(text=text, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


class _NoText:
    """What AutoTokenizer hands an audio-only reference: accepts GPT-2's padding token."""

    def add_special_tokens(self, tokens):
        return 0


def reference(wrapper: ModuleType, model: msclap.MsClap, tokenizer=None, clips=None):
    """A ``CLAPWrapper`` for ``model``'s version built by the package (see the module
    docstring), with ``model``'s weights; ``clips``: key -> float32 array at 44.1 kHz."""
    config = msclap.text_config(model.text_model, model.clap.state_dict())
    name = msclap.TEXT_MODELS[model.text_model].name

    class Tokenizer:
        @staticmethod
        def from_pretrained(requested, *args, **kwargs):
            assert requested == name
            return tokenizer if tokenizer is not None else _NoText()

    def refuse(*args, **kwargs):
        raise AssertionError("hf_hub_download was called")

    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp) / "empty.pth"
        torch.save({"model": {}}, empty)  # load_clap (strict=False) loads nothing from it
        with pytest.MonkeyPatch.context() as mp, msclap._text_tower_from_config(model.text_model, config), \
                warnings.catch_warnings():
            warnings.filterwarnings("ignore", "torch.meshgrid", UserWarning)
            mp.setattr(wrapper, "AutoTokenizer", Tokenizer)
            mp.setattr(wrapper, "hf_hub_download", refuse)
            ref = wrapper.CLAPWrapper(model_fp=str(empty), version=model.version, use_cuda=False)
    ref.clap.load_state_dict(model.clap.state_dict(), strict=True)
    assert ref.tokenizer is (tokenizer if tokenizer is not None else ref.tokenizer)
    if tokenizer is not None and not hasattr(tokenizer, "encode_plus"):
        ref.tokenizer = _Transformers4Calls(tokenizer)
    clips = clips if clips is not None else {}
    ref.read_audio = lambda key, resample=True: (torch.from_numpy(np.asarray(clips[key]))[None],
                                                 ref.args.sampling_rate)
    ref.clips = clips
    return ref
