"""MQTT transport shared by devices, gateways and the cloud (paho-mqtt 2.x), and the process plumbing of
their command lines (`command`: parser, logging, exit codes; `stderr_handler`).

Kept apart from `fl_protocol` (which must not import paho) and from the role packages (which must not
import each other). See docs/architecture.md, "Layering".
"""
