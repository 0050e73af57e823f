"""The inference engine: its own process, OpenVINO GenAI inside, tokens out over a Unix socket."""
