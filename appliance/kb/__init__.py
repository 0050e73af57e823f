"""The knowledge base: documents a customer uploads, as text in chunks ready to embed."""
