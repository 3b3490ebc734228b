"""IKEv2 cryptography, all of it through the `cryptography` package."""
