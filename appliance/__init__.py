"""Edge AI appliance: what runs on the box."""

__version__ = "0.1.0"
