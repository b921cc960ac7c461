"""The production node: supervisor, workers' admission, health, agent-check, PROXY v2."""
