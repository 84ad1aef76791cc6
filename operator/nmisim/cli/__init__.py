"""nmisim command line: ``evaluate`` and ``request`` (offline); ``run`` and ``explain`` register here too."""
