"""Identity sources for the public listener: one protocol, one module per source."""
