"""esp package."""
