"""L0/L1: plain types, the typed error tree, the validated config, process tuning (stdlib, PyYAML)."""
