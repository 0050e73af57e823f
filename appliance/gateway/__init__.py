"""The gateway process: every protocol edge in front of the engine (HTTP for now)."""
