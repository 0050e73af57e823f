"""The one way an update says no."""

from __future__ import annotations


class UpdateRefused(Exception):
    """An update step that must not go ahead, with a reason written for the operator.

    Raised for every refusal (bad signature, wrong box, downgrade, damaged bundle, no A/B
    image, ...); the CLI prints the message and exits 2.
    """
