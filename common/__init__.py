"""Formats shared by the node and the controller, low enough that neither imports the other."""
