"""File layouts, readers and the download engine."""
