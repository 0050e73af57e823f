"""Safe defaults: a listener reachable from the network needs TLS and authentication.

Similar gateways have been found on the internet with neither; this one refuses to start that
way unless ``security.insecure_expose_without_tls_or_auth`` says, loudly, that it is meant.
"""

from __future__ import annotations

import ipaddress

from appliance.config import Settings


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposed_listeners(settings: Settings) -> list[str]:
    """Settings keys of listeners bound beyond loopback."""
    exposed = [] if is_loopback(settings.http.host) else ["http.host"]
    if settings.mqtt.enabled and not is_loopback(settings.mqtt.host):
        exposed.append("mqtt.host")
    return exposed


def exposure_problems(settings: Settings) -> list[str]:
    """Why this configuration must not start; empty when it may."""
    exposed = exposed_listeners(settings)
    missing = [name for name, on in (("security.tls", settings.security.tls),
                                     ("security.auth", settings.security.auth)) if not on]
    if not exposed or not missing or settings.security.insecure_expose_without_tls_or_auth:
        return []
    return [f"{', '.join(exposed)} listen beyond loopback but {' and '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} off: anyone on the network could use the "
            "box. Turn them on, bind to 127.0.0.1, or set "
            "security.insecure_expose_without_tls_or_auth = true to accept the risk"]
