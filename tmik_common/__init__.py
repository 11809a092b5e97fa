"""Code both services really need, kept in one place (shared/DESIGN.md): the one audio loader."""
