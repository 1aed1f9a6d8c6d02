"""fedlora: federated LoRA fine-tuning of language models on edge-device fleets."""

__version__ = "0.1.0"
