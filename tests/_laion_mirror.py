"""A stand-in for the rehearsal's mirror (``CLAPNB_MIRROR``) on 127.0.0.1.

It serves, as :func:`clapnb.download.source` expects, each real address under
``/<host>/<path>`` and a ``manifest.json`` of their sizes and SHA-256 digests, and
answers HEAD requests too (:func:`clapnb.laion.checkpoint_reachable` asks with one).
Built on the download tests' :class:`_loopback.LoopbackServer`::

    with MirrorServer() as mirror:
        mirror.add_mirrored("https://huggingface.co/a/b.pt", payload)
        mirror.publish()                      # writes manifest.json
        monkeypatch.setenv("CLAPNB_MIRROR", mirror.base_url)
"""

from __future__ import annotations

import hashlib
import json
from urllib.parse import urlsplit

from _loopback import LoopbackServer, _Handler
from clapnb.download import MIRROR_MANIFEST


class _GetAndHead(_Handler):
    def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
        owner = self.server.owner
        path = self.path.split("?")[0]
        with owner.lock:
            owner.heads.append(path)
            route = owner.routes.get(path)
        if route is None:
            self.send_error(404, "not found")
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(route.data)))
        self.end_headers()


class MirrorServer(LoopbackServer):
    """:class:`LoopbackServer` laid out as a mirror; ``heads`` lists the HEAD requests' paths."""

    def __init__(self) -> None:
        super().__init__()
        self.heads: list[str] = []
        self.manifest: dict[str, dict] = {}
        self._server.RequestHandlerClass = _GetAndHead

    def add_mirrored(self, url: str, data: bytes) -> str:
        """Serve ``data`` as the mirror's copy of ``url``; returns the mirror's path."""
        parts = urlsplit(url)
        key = parts.netloc + parts.path
        self.manifest[key] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        self.add("/" + key, data)
        return "/" + key

    def publish(self) -> None:
        """(Re)write the manifest of everything added so far."""
        self.add("/" + MIRROR_MANIFEST, json.dumps(self.manifest).encode())
