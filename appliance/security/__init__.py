"""Who may talk to the box, how the box proves itself, and what it keeps secret on disk."""
