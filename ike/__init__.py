"""ike package."""
