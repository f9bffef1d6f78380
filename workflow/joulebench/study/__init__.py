"""The study a user asks for: its config read and checked (config, checks), the benchmark jobs it
expands to (matrix, specs) and the point ids that name them (points)."""
