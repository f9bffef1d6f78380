"""The study a user asks for: the config, its validation and the configurations it expands to."""
