"""Skills: what a message is for (intent recognition) and the box's own skills."""
