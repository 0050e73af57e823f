"""Model files on the box: discovery, metadata, the packaged default, GGUF conversion."""
