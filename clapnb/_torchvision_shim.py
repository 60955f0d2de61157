"""Stand-ins for laion-clap's two torchvision imports, used only where torchvision is missing.

``laion_clap.clap_module`` imports, at module level,

* ``torchvision.transforms`` (Normalize, Compose, ...) in ``transform.py``: the
  image transforms of its CLIP-style image tower;
* ``torchvision.ops.misc.FrozenBatchNorm2d`` in ``utils.py``: used only to
  freeze timm image towers.

The audio and text towers never call them, but without torchvision the import
fails (CPU-only installs often have no matching torchvision wheel). While
:func:`torchvision_stand_in` is active, placeholder modules with those names sit
in ``sys.modules``; they are removed again on exit, so nothing else in the
process (transformers checks for torchvision, for instance) ever sees a fake
torchvision. Calling a placeholder raises :class:`ImportError`; reading one of
its attributes raises :class:`AttributeError`; both say that torchvision is
not installed.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType

#: module -> the names laion_clap imports from it
STAND_INS: dict[str, tuple[str, ...]] = {
    "torchvision.transforms": ("Normalize", "Compose", "RandomResizedCrop", "InterpolationMode",
                               "ToTensor", "Resize", "CenterCrop"),
    "torchvision.ops.misc": ("FrozenBatchNorm2d",),
}


def _message(what: str) -> str:
    return (f"{what} is a stand-in: torchvision is not installed. clapnb only uses "
            "LAION-CLAP's audio and text towers; install torchvision for its image code.")


class _Unavailable(type):
    """Metaclass of the placeholders: calling one raises, reading an attribute raises."""

    def __call__(cls, *args, **kwargs):
        raise ImportError(_message(f"{cls.__module__}.{cls.__name__}"))

    def __getattr__(cls, attr: str):
        raise AttributeError(_message(f"{cls.__module__}.{cls.__name__}.{attr}"))


def torchvision_installed() -> bool:
    """True when a real torchvision is imported or can be imported."""
    module = sys.modules.get("torchvision")
    if module is not None:
        return not getattr(module, "_clapnb_stand_in", False)
    return importlib.util.find_spec("torchvision") is not None


def _stand_in_modules() -> dict[str, ModuleType]:
    """``torchvision``, ``torchvision.transforms``, ``torchvision.ops``, ``torchvision.ops.misc``."""
    modules: dict[str, ModuleType] = {}
    for full_name, names in STAND_INS.items():
        parts = full_name.split(".")
        for i in range(1, len(parts) + 1):  # the module and its parent packages
            name = ".".join(parts[:i])
            if name not in modules:
                modules[name] = ModuleType(name, "clapnb stand-in (torchvision is not installed)")
                modules[name].__path__ = []  # a package, so that submodules resolve
                modules[name]._clapnb_stand_in = True
                if i > 1:
                    setattr(modules[".".join(parts[:i - 1])], parts[i - 1], modules[name])
        for attr in names:
            setattr(modules[full_name], attr, _Unavailable(attr, (), {"__module__": full_name}))
    return modules


@contextmanager
def torchvision_stand_in() -> Iterator[bool]:
    """Make ``import torchvision.transforms`` / ``torchvision.ops.misc`` work inside the block.

    Does nothing when torchvision is installed. Yields True when the stand-ins
    are in use; they leave ``sys.modules`` when the block ends (also on error).
    """
    if "torchvision" in sys.modules or torchvision_installed():
        yield False  # the real one, or stand-ins already in place (nested use)
        return
    modules = _stand_in_modules()
    sys.modules.update(modules)
    try:
        yield True
    finally:
        for name, module in modules.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]
