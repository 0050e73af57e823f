"""The OS image: a reproducible Debian 12 disk with A/B root slots, built on the host.

Run it from the repository's virtualenv: ``python -m image build`` (``make image``).
"""
