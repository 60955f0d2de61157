"""clapnb.claims: which claims are asserted in which mode, and how a false one fails."""

import pytest

from clapnb import claims
from clapnb.settings import MIRROR_ENV


@pytest.fixture(autouse=True)
def no_mirror(monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)


def test_offline_claims_are_asserted_offline_and_skipped_online(capsys):
    offline, online = claims.Checker("tiny"), claims.Checker("laion/630k-audioset")
    assert offline.mode == "offline" and online.mode == "online"
    assert offline.offline("accuracy above 0.9", True, "0.95")
    with pytest.raises(claims.ClaimFailed, match="accuracy above 0.9.*0.85"):
        offline.offline("accuracy above 0.9", False, "0.85")
    assert not online.offline("accuracy above 0.9", False)  # not the model it was said of
    assert online.results == [("accuracy above 0.9", "skipped")]
    with pytest.raises(claims.ClaimFailed):
        online.online("a real CLAP ranks dog first", False)
    assert not offline.online("a real CLAP ranks dog first", False)
    out = capsys.readouterr().out
    assert "✓ accuracy above 0.9 (0.95)" in out and "not checked: accuracy above 0.9" in out


def test_rehearsal_skips_model_claims_visibly_but_asserts_facts(monkeypatch, capsys):
    monkeypatch.setenv(MIRROR_ENV, "http://127.0.0.1:9")
    check = claims.Checker("laion/630k-audioset")
    assert check.mode == "rehearsal"
    assert not check.online("a real CLAP ranks dog first", False)
    assert not check.offline("accuracy above 0.9", False)
    assert "random weights" in capsys.readouterr().out
    with pytest.raises(claims.ClaimFailed):
        check.always("masks lie in [0, 1]", False)


def test_unknown_model_name_is_refused():
    with pytest.raises(Exception, match="nope"):
        claims.Checker("nope").mode
