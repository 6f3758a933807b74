"""openbell."""
