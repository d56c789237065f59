"""Click commands: thin skins over the library. Only click is imported at module level."""
