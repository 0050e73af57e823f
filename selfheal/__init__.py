"""Self-healing: the supervisor that starts the appliance's processes and restarts them."""
