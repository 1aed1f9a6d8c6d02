"""`fedlora demo`: a whole federation (cloud, gateways, device processes, broker) on one machine."""
