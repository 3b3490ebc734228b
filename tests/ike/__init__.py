"""IKE engine tests."""
