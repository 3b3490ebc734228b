"""IKEv2 authentication: identities, PSK, signatures (RFC 7427) and certificate chains."""
