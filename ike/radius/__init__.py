"""RADIUS (RFC 2865) with EAP pass-through (RFC 3579): codec, authenticators, MPPE keys
(RFC 2548), a sans-I/O client and the per-session EAP relay. No I/O here."""
