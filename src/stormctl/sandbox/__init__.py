"""The local sandbox: real Redis, redis_exporter and Prometheus, a kube API emulator and a client fleet."""
