"""Guard-model adapters: prompt formats, taxonomies, verdict parsing. Pure Python, no torch."""
