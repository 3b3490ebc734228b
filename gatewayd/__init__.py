"""gatewayd package."""
