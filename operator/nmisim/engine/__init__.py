"""The pure NMI engine: no I/O, no kopf, no kubernetes imports."""
