"""The load-test gate run before a fleet rollout (``appliance bench gate``).

Locustfiles, one kind of traffic each, loaded by a ``locust`` process of their own (importing
locust patches the standard library for gevent, so nothing here imports them elsewhere):

- ``http_chat``: ``POST /v1/chat/completions``, the whole answer at once (type ``http``);
- ``stream_chat``: the same with ``stream: true`` (type ``stream``), with the time to the
  first token as its own type ``ttft`` and each stream's decode speed;
- ``ws_chat``: a message over the WebSocket ``/v1/ws`` until its reply (type ``ws``);
- ``mqtt_chat``: a request on ``appliance/v1/req/<client-id>`` until its reply (type ``mqtt``).

``common`` holds what they share. The gate itself (``gate``) runs locust, reads its CSV, and
judges the run against the SLO file (``slo``, defaults in ``slo.toml``).
"""
