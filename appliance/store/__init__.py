"""The box's durable state: one SQLite database in WAL mode."""
