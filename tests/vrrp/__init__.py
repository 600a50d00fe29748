"""VIP failover of the front tier: a keepalived VRRP pair in network namespaces."""
