"""Claims a notebook's text makes, checked against what the notebook computed.

A markdown cell that says "zero-shot accuracy is above 0.9" is followed by a small code
cell (tagged ``claim-check`` and hidden in rendered copies) that checks it::

    check = claims.Checker(model)
    check.offline("zero-shot accuracy above 0.9", acc > 0.9, f"measured {acc:.3f}")
    check.online("a real CLAP puts the dog class first", top == "dog")
    check.always("the mask lies in [0, 1]", 0 <= mask.min() and mask.max() <= 1)

Claims belong to the mode that made them:

* ``offline`` claims are numbers measured on TinyCLAP and its synthetic world; they are
  asserted offline and shown as *not checked* with any other model.
* ``online`` claims say what a trained real checkpoint does; they are asserted online
  and shown as *not checked* offline.
* ``always`` claims hold for any model (shapes, ranges, identities).

Under a rehearsal (``CLAPNB_MIRROR``: real architectures with random weights) only
``always`` claims are asserted; the others are printed as skipped, visibly, since random
weights make no promise about accuracy. A claim that does not hold raises
:class:`ClaimFailed`, naming the claim and what was measured, so CI fails when a
notebook's text drifts from its output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clapnb.model import ClapModel
from clapnb.registry import backend
from clapnb.settings import mirror


class ClaimFailed(AssertionError):
    """A statement in a notebook's text that its executed output contradicts."""


@dataclass
class Checker:
    """Checks claims for one model; :attr:`mode` is ``"offline"``, ``"online"`` or
    ``"rehearsal"``. ``results`` keeps ``(claim, outcome)`` pairs, outcome one of
    ``"holds"``, ``"skipped"``."""

    model: ClapModel | str
    results: list[tuple[str, str]] = field(default_factory=list)

    @property
    def mode(self) -> str:
        if mirror() is not None:
            return "rehearsal"
        return backend(self.model).mode

    def offline(self, claim: str, holds: bool, measured: str = "") -> bool:
        """A number or comparison measured on TinyCLAP (the offline world)."""
        return self._check(claim, holds, measured, when="offline")

    def online(self, claim: str, holds: bool, measured: str = "") -> bool:
        """What a trained real checkpoint does (LAION-CLAP, MS-CLAP)."""
        return self._check(claim, holds, measured, when="online")

    def always(self, claim: str, holds: bool, measured: str = "") -> bool:
        """A fact that holds for any model, random weights included."""
        return self._check(claim, holds, measured, when="always")

    def _check(self, claim: str, holds: bool, measured: str, when: str) -> bool:
        suffix = f" ({measured})" if measured else ""
        if when != "always" and when != self.mode:
            why = ("random weights in the rehearsal" if self.mode == "rehearsal"
                   else f"the text states it for the {when} model")
            print(f"- not checked: {claim}{suffix} [{why}]")
            self.results.append((claim, "skipped"))
            return False
        if not bool(holds):
            raise ClaimFailed(f"The notebook says: {claim!r}, but its output shows otherwise"
                              f"{suffix}. Fix the text or the computation it describes.")
        print(f"✓ {claim}{suffix}")
        self.results.append((claim, "holds"))
        return True
