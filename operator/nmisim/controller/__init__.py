"""The kopf operator: a thin layer that feeds watch events to the engine and writes its answers."""
