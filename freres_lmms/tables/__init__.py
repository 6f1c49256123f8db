"""Paper tables: specs and reference numbers, running their rows through lmms-eval, rendering."""
