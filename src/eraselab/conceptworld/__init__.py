"""ConceptWorld: a synthetic world with exact concept labels, and its tiny SD-architecture model."""
