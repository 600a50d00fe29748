"""What a process tells the outside: log lines, Prometheus metrics, the service manager."""
