"""Project-wide pytest configuration."""

pytest_plugins = ["tests.lab.plugin"]
