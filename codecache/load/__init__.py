"""The load generator: pilots' requests at scale (`codecache loadgen`)."""
