"""Plugins: signed folders of skills an operator installs, approves and runs confined."""
