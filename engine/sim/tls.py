"""A throwaway TLS identity for the simulator: a fresh CA, a certificate for loopback from it.

The bench's ``--tls`` and the tests serve ``wss://`` with it and hand the engine the CA's PEM
file as ``UPSTREAM_CA_FILE``, so the engine's real verifying TLS client runs against a peer it
trusts for that run only. Made with ``trustme`` (the ``bench`` and ``test`` extras).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ThrowawayTls"]


@dataclass(frozen=True, slots=True)
class ThrowawayTls:
    """The simulator's server context and the CA bundle that trusts it."""

    server_context: ssl.SSLContext
    ca_file: Path

    @classmethod
    def create(cls, folder: Path, host: str = "127.0.0.1") -> ThrowawayTls:
        """A new CA and a certificate for ``host``; the CA's PEM is written into ``folder``.

        Raises:
            ModuleNotFoundError: trustme is not installed (pip install 'voice-engine[bench]').
        """
        import trustme

        ca = trustme.CA()
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(host).configure_cert(server)
        ca_file = folder / "upstream-ca.pem"
        ca.cert_pem.write_to_path(str(ca_file))
        return cls(server, ca_file)
