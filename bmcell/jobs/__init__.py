"""Jobs: orchestration of core and export (quickstart, compare, release, bench-train); the cli layer calls them."""
