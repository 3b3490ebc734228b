"""Point-to-site building blocks: virtual address pools and configuration payloads."""
