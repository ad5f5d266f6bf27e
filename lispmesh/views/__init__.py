"""What people see: one renderer per view, each a function from the data a verb's `--json`
prints to a rich renderable (or lines). Commands print them; views never fetch anything."""
