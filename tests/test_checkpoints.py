"""clapnb.checkpoints: what the LAION-CLAP and msclap backends share (checkpoint lookup,
cache and download; reading and strict loading of weights; tokenizer files and checks),
tested on its own with small modules, stub tokenizers and a loopback server. The
backends' own uses of it are tested in test_laion.py and test_msclap.py."""

import hashlib
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from _loopback import LoopbackServer
from clapnb import laion, msclap
from clapnb.checkpoints import (CheckpointError, CheckpointFile, TokenizerError, check_fits,
                                check_real, fetch_files, fetch_tokenizer, find_checkpoint,
                                load_strict, lookup_file, mismatches, read_state,
                                reading_tokenizer_files, require_tokenizer, tokenizer_folder)
from clapnb.download import DownloadError, UnverifiedDownload


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """A private cache, online (loopback only), no mirror."""
    monkeypatch.setenv("CLAPNB_CACHE", str(tmp_path))
    monkeypatch.setenv("CLAPNB_OFFLINE", "0")
    monkeypatch.delenv("CLAPNB_MIRROR", raising=False)
    return tmp_path


def test_both_backends_raise_the_same_error_types():
    assert laion.CheckpointError is msclap.CheckpointError is CheckpointError
    assert laion.TokenizerError is msclap.TokenizerError is TokenizerError
    assert issubclass(CheckpointError, RuntimeError) and issubclass(TokenizerError, RuntimeError)


# ---------------------------------------------------------------------------------
# Checkpoint files: lookup, cache, download
# ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Entry:
    """A backend's checkpoint entry, reduced to what lookup_file reads."""

    file: str
    url: str
    size: int | None = None
    sha256: str | None = None


def test_an_unknown_name_names_the_family_and_lists_the_valid_names():
    table = {"x/one": 1, "x/two": 2}
    assert find_checkpoint(table, "x/two", "X-CLAP") == 2
    with pytest.raises(ValueError, match=r"unknown X-CLAP checkpoint 'x/three'; valid names: x/one, x/two"):
        find_checkpoint(table, "x/three", "X-CLAP")
    with pytest.raises(ValueError, match="unknown LAION-CLAP checkpoint 'msclap/2023'"):
        laion.checkpoint_path("msclap/2023")
    with pytest.raises(ValueError, match="unknown msclap checkpoint 'laion/630k'; valid names: msclap/2023"):
        msclap.checkpoint_path("laion/630k")


def test_lookup_file_reads_the_entry_and_its_address_at_call_time():
    table = {"x/a": _Entry("a.pt", "https://example.org/a.pt", 3, "ab" * 32)}
    assert lookup_file(table, "x/a", "X") == CheckpointFile("x/a", "a.pt", "https://example.org/a.pt",
                                                           3, "ab" * 32)
    spec = laion.CHECKPOINTS[laion.DEFAULT_CHECKPOINT]
    assert laion.checkpoint_file(laion.DEFAULT_CHECKPOINT) == CheckpointFile(
        laion.DEFAULT_CHECKPOINT, spec.file, spec.url, spec.size, spec.sha256)


def test_cached_checks_the_size_where_it_is_known(cache):
    known = CheckpointFile("x/known", "known.pt", "https://example.org/known.pt", size=10)
    assert known.path() == cache / "checkpoints" / "known.pt"
    assert not known.cached()
    known.path().write_bytes(b"x" * 9)
    assert not known.cached()
    known.path().write_bytes(b"x" * 10)
    assert known.cached()
    unknown = CheckpointFile("x/unknown", "unknown.pt", "https://example.org/unknown.pt")
    unknown.path().write_bytes(b"x")  # size unknown: being there is enough
    assert unknown.cached()


def test_fetch_downloads_verifies_and_then_uses_the_cache(cache):
    payload = b"checkpoint bytes" * 100
    digest = hashlib.sha256(payload).hexdigest()
    with LoopbackServer() as server:
        url = server.add("/repo/good.pt", payload)
        file = CheckpointFile("x/good", "good.pt", url, len(payload), digest)
        assert not file.cached()
        with warnings.catch_warnings():
            warnings.simplefilter("error", UnverifiedDownload)  # a digest: verified
            assert file.fetch().read_bytes() == payload
        assert file.cached() and server.hits("/repo/good.pt") == [None]
        assert file.fetch() == file.path() and len(server.hits("/repo/good.pt")) == 1  # cached
        src = file.source()
        assert src.url == url and src.sha256 == digest and not src.mirrored
        assert file.cache_key(src, "prep-v1") == f"x/good|good.pt|{len(payload)}B|{digest}|prep-v1"

        bad = CheckpointFile("x/bad", "bad.pt", server.add("/repo/bad.pt", payload), len(payload),
                             "0" * 64)
        with pytest.raises(DownloadError, match="the file was deleted"):
            bad.fetch()
        assert not bad.path().exists() and not bad.cached()

        bare = CheckpointFile("x/bare", "bare.pt", server.add("/repo/bare.pt", b"weights"))
        with pytest.warns(UnverifiedDownload, match="no checksum is published"):
            bare.fetch()
        assert bare.cache_key(bare.source(), "p") == "x/bare|bare.pt|7B|sha256-unknown|p"


def test_fetch_offline_fails_at_once(cache, monkeypatch):
    monkeypatch.setenv("CLAPNB_OFFLINE", "1")
    file = CheckpointFile("x/a", "a.pt", "https://example.org/a.pt", 3)
    with pytest.raises(DownloadError, match="CLAPNB_OFFLINE=1 forbids network access"):
        file.fetch()


# ---------------------------------------------------------------------------------
# Reading and loading weights
# ---------------------------------------------------------------------------------
def test_read_state_takes_the_state_dict_under_its_key_or_bare(tmp_path):
    state = {"w": torch.randn(2, 3), "b": torch.zeros(2)}
    torch.save({"model": state, "optimizer": {"lr": 1e-4}, "epoch": 3}, tmp_path / "ckpt.pt")
    read = read_state(tmp_path / "ckpt.pt", "model", "an X checkpoint")
    assert read.keys() == state.keys() and all(torch.equal(read[k], v) for k, v in state.items())
    torch.save(state, tmp_path / "bare.pt")
    assert read_state(tmp_path / "bare.pt", "model", "an X checkpoint").keys() == state.keys()


def test_read_state_refuses_what_is_not_weights_and_says_what_to_do(tmp_path):
    torch.save({"model": {"w": torch.ones(1)}, "args": threading.Event}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"threading.Event.*does not unpickle; is it an X checkpoint\?"):
        read_state(tmp_path / "evil.pt", "model", "an X checkpoint")
    (tmp_path / "cut.pt").write_bytes(b"PK\x03\x04 not a whole file")
    with pytest.raises(CheckpointError, match="cannot load .*cut.pt: it is unreadable.*delete it"):
        read_state(tmp_path / "cut.pt", "model", "an X checkpoint")
    for odd in ({"model": {"w": [1, 2]}}, {"model": {}}, [torch.ones(1)]):
        torch.save(odd, tmp_path / "odd.pt")
        with pytest.raises(CheckpointError, match=r"no state dict of tensors \(bare or under 'model'\); "
                                                  r"is it an X checkpoint\?"):
            read_state(tmp_path / "odd.pt", "model", "an X checkpoint")


@pytest.mark.parametrize("backend, key, what", [(laion, "state_dict", "a LAION-CLAP checkpoint"),
                                                (msclap, "model", "an msclap checkpoint")])
def test_each_backends_read_checkpoint_says_what_it_expected(tmp_path, backend, key, what):
    torch.save({key: {"w": torch.ones(1)}, "args": threading.Event}, tmp_path / "evil.pt")
    with pytest.raises(backend.CheckpointError, match=rf"threading.Event.*is it {what}\?"):
        backend.read_checkpoint(tmp_path / "evil.pt")
    torch.save({key: {"w": [1, 2]}}, tmp_path / "odd.pt")
    with pytest.raises(backend.CheckpointError, match=rf"no state dict of tensors \(bare or under '{key}'\); "
                                                      rf"is it {what}\?"):
        backend.read_checkpoint(tmp_path / "odd.pt")


def test_read_state_allows_the_globals_it_is_given(tmp_path):
    import numpy as np
    torch.save({"state_dict": {"w": torch.ones(1)}, "metric": np.float64(0.5)}, tmp_path / "np.pt")
    with pytest.raises(CheckpointError, match="numpy"):
        read_state(tmp_path / "np.pt", "state_dict", "an X checkpoint")
    allowed = laion._numpy_scalar_types()
    assert read_state(tmp_path / "np.pt", "state_dict", "an X checkpoint", allowed).keys() == {"w"}


class _Small(nn.Module):
    def __init__(self, width: int = 3):
        super().__init__()
        self.a = nn.Linear(2, width)
        self.bn = nn.BatchNorm1d(width)


def test_load_strict_loads_what_fits_and_names_every_key_that_does_not():
    source, target = _Small(), _Small()
    load_strict(target, source.state_dict())
    assert torch.equal(target.a.weight, source.a.weight)
    state = source.state_dict()
    cases = {r"1 missing: a\.bias": {k: v for k, v in state.items() if k != "a.bias"},
             r"1 unexpected: extra\.weight": state | {"extra.weight": torch.ones(1)},
             r"1 with another shape: a\.weight \(4, 2\) \(model: \(3, 2\)\)":
                 state | {"a.weight": torch.ones(4, 2)}}
    for message, broken in cases.items():
        with pytest.raises(CheckpointError, match=rf"^ckpt.pt does not fit the model \(.*{message}.*\)\. "
                                                  r"Is it an X\?$"):
            load_strict(target, broken, "ckpt.pt", hint="Is it an X?")
    with pytest.raises(CheckpointError, match=r"^checkpoint does not fit the model \(7 missing: .*, \.\.\.\)\.$"):
        load_strict(target, {})  # no hint; more than six keys: the first six, then "..."
    assert mismatches(target.state_dict(), state) == []


def test_load_strict_keeps_the_modules_own_values_for_keys_that_may_be_missing():
    source, target = _Small(), _Small()
    target.bn.num_batches_tracked.fill_(7)
    state = {k: v for k, v in source.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["old.attn.bias"] = torch.ones(1)  # a key of an older version: may be extra
    load_strict(target, state, may_be_missing=lambda k: k.endswith("num_batches_tracked"),
                may_be_extra=lambda k: k.startswith("old."))
    assert int(target.bn.num_batches_tracked) == 7 and torch.equal(target.a.bias, source.a.bias)
    with pytest.raises(CheckpointError, match=r"1 unexpected: old\.attn\.bias"):
        load_strict(target, state, may_be_missing=lambda k: k.endswith("num_batches_tracked"))


# ---------------------------------------------------------------------------------
# Tokenizers
# ---------------------------------------------------------------------------------
class _Stub:
    """Tokenizer-shaped: a vocabulary size, what any text becomes, a padding id."""

    def __init__(self, size: int, ids: list[int], pad: int | None = 0):
        self.size, self.ids, self.pad_token_id = size, ids, pad

    def __len__(self) -> int:
        return self.size

    def __call__(self, text):
        return {"input_ids": self.ids}


def test_check_real_names_the_tokenizer_its_folder_and_the_real_files():
    urls = {"vocab.txt": "https://example.org/vocab.txt"}
    check_real(_Stub(100, [1, 2]), "x-base", 100, ("hi", [1, 2]), urls)
    for stub in (_Stub(99, [1, 2]), _Stub(100, [1, 3])):
        with pytest.raises(TokenizerError, match=r"the tokenizer built from the files in /f is not the real "
                                                 r"x-base one: its vocabulary has .* tokens \(expected 100\)"
                                                 r".*delete that folder.*https://example.org/vocab.txt.*"
                                                 r"load_model\('tiny'\)"):
            check_real(stub, "x-base", 100, ("hi", [1, 2]), urls, "/f")


def test_check_fits_lists_what_does_not_fit_and_what_to_delete(tmp_path):
    check_fits(_Stub(10, [], pad=1), 10, 1, tmp_path)
    with pytest.raises(TokenizerError, match=rf"it has 1,001 tokens, the embedding table 1,000 rows\. "
                                             rf"Delete {tmp_path} and the checkpoint"):
        check_fits(_Stub(1001, [], pad=1), 1000, 1, tmp_path)
    with pytest.raises(TokenizerError, match=r"its padding id is 0, not 1; it has no <end> token\. Delete"):
        check_fits(_Stub(10, [], pad=0), 10, 1, tmp_path, ["it has no <end> token"])
    assert "rebuild the mirror" in str(pytest.raises(TokenizerError, check_fits, _Stub(10, []), 5, 0,
                                                     tmp_path).value)


def test_require_tokenizer_says_how_to_load_one():
    require_tokenizer(_Stub(1, []), "x/model", "load_x()")
    with pytest.raises(TokenizerError, match=r"x/random has no tokenizer loaded .* load one with load_x\(\)"):
        require_tokenizer(None, "x/random", "load_x()")


def test_unreadable_tokenizer_files_are_a_tokenizer_error(tmp_path):
    with pytest.raises(TokenizerError, match=f"the tokenizer files in {tmp_path} are unreadable "
                                             r"\(bad json\); delete them"):
        with reading_tokenizer_files(tmp_path):
            raise ValueError("bad json")
    with pytest.raises(TokenizerError, match="^as it was$"), reading_tokenizer_files(tmp_path):
        raise TokenizerError("as it was")


def _tokenizer_server(server: LoopbackServer, files: dict[str, bytes]) -> dict[str, str]:
    return {name: server.add(f"/tok/{name}", data) for name, data in files.items()}


def _build(files: dict[str, Path]) -> str:
    """A 'tokenizer': the text of its vocab file (unreadable when it is not UTF-8)."""
    with reading_tokenizer_files(files["vocab.txt"].parent):
        return files["vocab.txt"].read_bytes().decode()


def _check(tokenizer: str, folder: Path) -> None:
    if tokenizer != "real":
        raise TokenizerError(f"not the real one, in {folder}")


def test_tokenizer_files_are_fetched_once_unverified_then_cached(cache):
    folder = tokenizer_folder("x-base")
    assert folder == cache / "tokenizers" / "x-base" and folder.is_dir()
    with LoopbackServer() as server:
        urls = _tokenizer_server(server, {"vocab.txt": b"real", "merges.txt": b"m"})
        with pytest.warns(UnverifiedDownload, match="no checksum is published"):
            files = fetch_files(urls, folder, "x-base")
        assert files == {"vocab.txt": folder / "vocab.txt", "merges.txt": folder / "merges.txt"}
        assert fetch_tokenizer(urls, folder, "x-base", _build, _check) == "real"
        assert len(server.requests) == 2  # the second time: from the cache


def test_stale_cached_tokenizer_files_are_fetched_again_once_online_and_refused_offline(cache, monkeypatch):
    folder = tokenizer_folder("x-base")
    (folder / "vocab.txt").write_bytes(b"stand-in")  # what a rehearsal leaves behind
    with LoopbackServer() as server:
        urls = _tokenizer_server(server, {"vocab.txt": b"real"})
        monkeypatch.setenv("CLAPNB_OFFLINE", "1")
        with pytest.raises(TokenizerError, match="not the real one"):
            fetch_tokenizer(urls, folder, "x-base", _build, _check)
        assert server.requests == []
        monkeypatch.setenv("CLAPNB_OFFLINE", "0")
        with pytest.warns(UnverifiedDownload):
            assert fetch_tokenizer(urls, folder, "x-base", _build, _check) == "real"
        assert len(server.requests) == 1


@pytest.mark.parametrize("served, message", [(b"stand-in", "not the real one"),
                                             (b"\xff\xfe", "unreadable")])
def test_freshly_downloaded_tokenizer_files_that_fail_are_not_fetched_twice(cache, served, message):
    folder = tokenizer_folder("x-base")
    with LoopbackServer() as server:
        urls = _tokenizer_server(server, {"vocab.txt": served})
        with pytest.warns(UnverifiedDownload), pytest.raises(TokenizerError, match=message):
            fetch_tokenizer(urls, folder, "x-base", _build, _check)
        assert len(server.requests) == 1


def test_under_a_mirror_tokenizer_files_are_verified_by_its_manifest_and_not_checked(cache, monkeypatch):
    from _laion_mirror import MirrorServer
    url = "https://example.org/x-base/vocab.txt"
    with MirrorServer() as mirror:
        served = mirror.add_mirrored(url, b"small")
        mirror.publish()
        monkeypatch.setenv("CLAPNB_MIRROR", mirror.base_url)
        with warnings.catch_warnings():
            warnings.simplefilter("error", UnverifiedDownload)  # the manifest verifies it
            assert fetch_tokenizer({"vocab.txt": url}, tokenizer_folder("x-base"), "x-base",
                                   _build, _check) == "small"
        assert mirror.hits(served) == [None]
