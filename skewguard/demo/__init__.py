"""The end-to-end demo and its synthetic click-through-rate traffic."""
