"""EAP inside IKE_AUTH (RFC 7296 §2.16): EAP framing and the EAP-MSCHAPv2 method."""
