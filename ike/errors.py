"""The exception types that leave the IKE engine."""


class IkeError(Exception):
    """Base of every error the IKE engine raises on purpose."""


class DecodeError(IkeError):
    """A datagram or payload is malformed. The only exception the codec lets escape."""


class CryptoError(IkeError):
    """Integrity check failed, bad key exchange value, or similar; the message is dropped."""


class ProposalError(IkeError):
    """A proposal string or configured algorithm is unknown or unsupported."""


class AuthenticationError(IkeError):
    """The peer did not prove the identity we require (bad PSK, bad signature, bad chain)."""
