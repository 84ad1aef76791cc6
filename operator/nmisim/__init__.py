"""nmisim: simulate aad-pod-identity's NMI for every pod."""

__version__ = "0.1.0"
