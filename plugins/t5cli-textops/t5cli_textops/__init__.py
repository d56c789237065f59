"""Example t5cli plugin package."""
