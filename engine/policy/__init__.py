"""L2: rate limits, retries, the circuit breaker, counters and the adaptive controller."""
