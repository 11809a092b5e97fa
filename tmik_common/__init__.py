"""Code both services really need, kept in one place (shared/DESIGN.md): the audio loader, the task
runner behind both HTTP services, and the lyrics (syllables per line for the melody, per note for the voice)."""
