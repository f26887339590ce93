"""Drop-ins for other libraries (each needs that library installed)."""
