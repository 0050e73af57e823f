"""Signed A/B update bundles and the slot logic behind them.

A bundle is a tar of a signed manifest and three payloads (the root filesystem, zstd
compressed, the kernel and the initrd). It is verified completely before a byte is written,
written into the slot that is not running, and booted once on trial through systemd-boot's
boot counting; ``appliance update confirm`` blesses a healthy trial, and a failed trial falls
back to the old slot by itself.

Modules: ``errors`` (the one refusal), ``manifest``, ``signing``, ``bundle`` (build),
``reader`` (stream a bundle), ``verify``, ``release`` (the running image), ``versions``
(systemd's version order), ``bootloader`` (entries, boot order, simulated boots), ``slots``,
``files`` (atomic writes), ``state`` (pending install, events), ``install``, ``confirm``,
``status``.
"""
