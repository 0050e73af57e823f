"""OpenAI-compatible chat completions: router (HTTP), protocol (pydantic), serving (logic)."""
