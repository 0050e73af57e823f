"""The built-in MQTT broker (amqtt 0.12.1, with its gaps closed here) and its pipeline bridge."""
