"""The tasks t5cli ships, registered through the same hooks as any plugin's."""
