"""Reading embedding dumps and writing mining outputs for the offline CLI."""
