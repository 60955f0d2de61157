"""laion_clap's own inference code, loaded offline for parity tests.

``load_hook()`` returns the package's ``hook.py`` module (``CLAP_Module`` with
``get_audio_embedding_from_data`` and ``get_text_embedding``, and through it
``training/data.py``'s ``get_audio_features``, ``int16_to_float32`` and
``float32_to_int16``) without running ``laion_clap/__init__.py`` (which appends
to ``sys.path`` and downloads tokenizers):

* ``laion_clap.clap_module`` is the one :func:`clapnb.laion.import_clap_module`
  registered; while hook.py and training/data.py are imported, it also answers to
  the top-level name ``clap_module`` they import, a bare ``laion_clap`` package
  stands in for the real one, and the three ``from_pretrained`` tokenizer
  downloads at the top of training/data.py return ``None``. Every name added to
  ``sys.modules`` is removed again afterwards: the loaded modules keep their own
  references.
* torchvision and torchaudio are not installed here (CPU installs often have no
  matching wheel). training/data.py needs three things from them for audio, all
  in the fusion path: ``torchvision.transforms.Resize``, and torchaudio's
  ``MelSpectrogram`` and ``AmplitudeToDB``. Where the real packages import, they
  are used; otherwise :class:`Resize`, :class:`MelSpectrogram` and
  :class:`AmplitudeToDB` below stand in: line-by-line transcriptions of
  torchvision 0.28 (``transforms.functional.resize`` -> ``_functional_tensor.resize``)
  and torchaudio 2.11 (``functional.spectrogram``, ``melscale_fbanks``,
  ``amplitude_to_DB``) for the arguments the package passes, and nothing else.

``reference_module(hook, model, tokenizer)`` builds a ``CLAP_Module`` the
package's way (``create_model``), with the RoBERTa text tower from the model's
own configuration instead of a download, and loads the model's weights into it.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from clapnb import laion


# ---------------------------------------------------------------------------------
# Stand-ins for torchvision.transforms.Resize and torchaudio's mel front end
# ---------------------------------------------------------------------------------
class Resize:
    """torchvision.transforms.Resize(size) on a tensor: bilinear, antialias=True (the
    default since torchvision 0.17), align_corners=False; an image already of the
    requested size is returned as it is."""

    def __init__(self, size, interpolation="bilinear", max_size=None, antialias=True):
        assert interpolation == "bilinear" and max_size is None and antialias is True
        self.size = list(size)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        assert isinstance(self.size, list) and len(self.size) == 2
        if list(img.shape[-2:]) == self.size:
            return img
        squeeze = img.ndim < 4
        x = img.unsqueeze(0) if squeeze else img
        assert x.dtype in (torch.float32, torch.float64)
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        return x.squeeze(0) if squeeze else x


def _hz_to_mel_htk(freq: float) -> float:
    return 2595.0 * math.log10(1.0 + (freq / 700.0))


def _mel_to_hz_htk(mels: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)


def melscale_fbanks(n_freqs: int, f_min: float, f_max: float, n_mels: int,
                    sample_rate: int) -> torch.Tensor:
    """torchaudio.functional.melscale_fbanks(norm=None, mel_scale="htk"), in float32 as there."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_pts = torch.linspace(_hz_to_mel_htk(f_min), _hz_to_mel_htk(f_max), n_mels + 2)
    f_pts = _mel_to_hz_htk(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    zero = torch.zeros(1)
    down_slopes = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
    up_slopes = slopes[:, 2:] / f_diff[1:]
    return torch.max(zero, torch.min(down_slopes, up_slopes))


class MelSpectrogram(nn.Module):
    """torchaudio.transforms.MelSpectrogram with the arguments get_mel passes
    (Hann window, power 2, no normalisation, one-sided, HTK mel without norm)."""

    def __init__(self, sample_rate, n_fft, win_length, hop_length, center, pad_mode, power,
                 norm, onesided, n_mels, f_min, f_max):
        super().__init__()
        assert power == 2.0 and norm is None and onesided
        self.n_fft, self.win_length, self.hop_length = n_fft, win_length, hop_length
        self.center, self.pad_mode = center, pad_mode
        self.register_buffer("window", torch.hann_window(win_length))
        self.register_buffer("fb", melscale_fbanks(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        shape = waveform.size()
        waveform = waveform.reshape(-1, shape[-1])
        spec_f = torch.stft(input=waveform, n_fft=self.n_fft, hop_length=self.hop_length,
                            win_length=self.win_length, window=self.window, center=self.center,
                            pad_mode=self.pad_mode, normalized=False, onesided=True,
                            return_complex=True)
        spec_f = spec_f.reshape(shape[:-1] + spec_f.shape[-2:])
        specgram = spec_f.abs().pow(2.0)
        return torch.matmul(specgram.transpose(-1, -2), self.fb).transpose(-1, -2)


class AmplitudeToDB(nn.Module):
    """torchaudio.transforms.AmplitudeToDB(stype="power", top_db=None)."""

    def __init__(self, stype: str = "power", top_db=None):
        super().__init__()
        assert stype == "power" and top_db is None
        self.multiplier, self.amin, self.ref_value = 10.0, 1e-10, 1.0
        self.db_multiplier = math.log10(max(self.amin, self.ref_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_db = self.multiplier * torch.log10(torch.clamp(x, min=self.amin))
        x_db -= self.multiplier * self.db_multiplier
        return x_db


def _stand_in(name: str, **attrs) -> ModuleType:
    module = ModuleType(name, "test stand-in (tests/_laion_reference.py)")
    module.__path__ = []
    module.__dict__.update(attrs)
    return module


def _torchvision_and_torchaudio() -> dict[str, ModuleType]:
    """sys.modules entries for what training/data.py imports of torchvision and
    torchaudio: empty where the real package imports (then it is used)."""
    modules: dict[str, ModuleType] = {}
    try:
        import torchvision.transforms  # noqa: F401
    except ImportError:
        transforms = _stand_in("torchvision.transforms", Resize=Resize)
        datasets = _stand_in("torchvision.datasets")
        modules |= {"torchvision": _stand_in("torchvision", transforms=transforms, datasets=datasets),
                    "torchvision.transforms": transforms, "torchvision.datasets": datasets}
    try:
        import torchaudio.transforms  # noqa: F401
    except ImportError:
        transforms = _stand_in("torchaudio.transforms", MelSpectrogram=MelSpectrogram,
                               AmplitudeToDB=AmplitudeToDB)
        modules |= {"torchaudio": _stand_in("torchaudio", transforms=transforms),
                    "torchaudio.transforms": transforms}
    return modules


def _training_only_imports() -> dict[str, ModuleType]:
    """Empty stand-ins for what training/data.py imports only to read training shards
    (braceexpand, webdataset, wget): clapnb never installs them, and ``get_audio_features``,
    the one function the tests take from there, uses none of them."""
    modules: dict[str, ModuleType] = {}
    for name in ("braceexpand", "webdataset", "wget"):
        try:
            importlib.import_module(name)
        except ImportError:
            modules[name] = _stand_in(name)
    return modules


# ---------------------------------------------------------------------------------
# hook.py
# ---------------------------------------------------------------------------------
def load_hook() -> ModuleType:
    """laion_clap/hook.py, imported offline (see the module docstring)."""
    from transformers import BartTokenizer, BertTokenizer, RobertaTokenizer
    laion.import_clap_module()
    folder = Path(importlib.util.find_spec("laion_clap").submodule_search_locations[0])
    package = _stand_in("laion_clap")
    package.__path__ = [str(folder)]
    prefix = "laion_clap.clap_module"
    aliases = {"clap_module" + name[len(prefix):]: module for name, module in sys.modules.items()
               if name == prefix or name.startswith(prefix + ".")}
    before = set(sys.modules)
    with pytest.MonkeyPatch.context() as mp:
        for name, module in {"laion_clap": package, **aliases, **_torchvision_and_torchaudio(),
                             **_training_only_imports()}.items():
            mp.setitem(sys.modules, name, module)
        for cls in (BertTokenizer, RobertaTokenizer, BartTokenizer):  # downloads at import
            mp.setattr(cls, "from_pretrained", classmethod(lambda cls, *args, **kwargs: None))
        spec = importlib.util.spec_from_file_location("laion_clap.hook", folder / "hook.py")
        hook = importlib.util.module_from_spec(spec)
        mp.setitem(sys.modules, "laion_clap.hook", hook)
        try:
            spec.loader.exec_module(hook)
        finally:
            for name in set(sys.modules) - before:  # laion_clap.training(.data) and the like
                if name.split(".")[0] in ("laion_clap", "clap_module", "torchvision", "torchaudio",
                                          "braceexpand", "webdataset", "wget"):
                    del sys.modules[name]
    return hook


def reference_module(hook: ModuleType, model: laion.LaionClap, tokenizer=None) -> nn.Module:
    """``hook.CLAP_Module`` for ``model``'s architecture (HTSAT-tiny, fusion or not) built by
    the package's ``__init__`` (``create_model``; its RoBERTa from ``model``'s own
    configuration instead of a download; ``tokenizer`` instead of roberta-base's), with
    ``model``'s weights loaded into it."""
    config = laion.roberta_config(model.clap.state_dict())

    class Tokenizer:
        @staticmethod
        def from_pretrained(name, *args, **kwargs):
            assert name == "roberta-base"
            return tokenizer

    with pytest.MonkeyPatch.context() as mp, laion._roberta_from_config(config):
        mp.setattr(hook, "RobertaTokenizer", Tokenizer)
        module = hook.CLAP_Module(enable_fusion=model.fusion, device="cpu", amodel="HTSAT-tiny")
    module.model.load_state_dict(model.clap.state_dict(), strict=True)
    return module.eval()
