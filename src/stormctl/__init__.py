"""stormctl: run the fintech.redis_storm playbooks during a Redis connection storm."""

__version__ = "0.1.0"
