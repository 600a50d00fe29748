"""Operations: `codecache check` (the facts, the probe of a node or store, the verdict)."""
